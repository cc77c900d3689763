"""Loading: the file, the environment, validation with errors that name the key, and showing a config.

Precedence, lowest to highest:

1. defaults built into the section classes (``config.yaml`` documents the same values);
2. the YAML file given with ``--config``;
3. environment variables ``STREAMER__<SECTION>__<KEY>=value`` (double underscore
   between levels, case-insensitive; the value is parsed as a YAML scalar, so
   ``STREAMER__BATCHING__MAX_BATCH=512`` is an int and
   ``STREAMER__READINGS__CHANNELS='[temp, vibration]'`` a list).

Secrets (``kafka.security.sasl_password``) may also come from a file
(``sasl_password_file``); they are :class:`~streamer.config.base.Secret`
values that print as ``***``.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from streamer.config.base import MASK, Secret
from streamer.config.thresholds import MOVED_KEYS
from streamer.config.tree import Config
from streamer.errors import ConfigError

log = logging.getLogger("streamer.config")

ENV_PREFIX = "STREAMER__"
_SECRET_KEYS = frozenset({"sasl_password"})


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load, merge and validate the configuration.

    Args:
        path: YAML file; ``None`` uses the built-in defaults only.
        environ: Environment to read ``STREAMER__*`` overrides from
            (``os.environ`` when ``None``).

    Returns:
        The validated, frozen configuration.

    Raises:
        ConfigError: The file cannot be read or a value is invalid; the message
            names the source and the key path.
    """
    source = str(path) if path is not None else "<defaults>"
    from_file: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    overrides = env_overrides(os.environ if environ is None else environ)
    raw = copy.deepcopy(from_file)
    for override_path, value in overrides.items():
        _set_path(raw, override_path, value, source="environment")
    _refuse_moved_keys(raw, from_file, source)
    try:
        return _convert(raw)
    except msgspec.ValidationError as exc:
        key_path, reason = _split_validation_error(str(exc))
        got = _lookup(raw, key_path)
        secret = key_path.rsplit(".", 1)[-1] in _SECRET_KEYS  # never echo a secret, even a malformed one
        if not secret and got is not _MISSING and not isinstance(got, dict) and repr(got) not in reason:
            reason = f"{reason}, got {got!r}"
        raise ConfigError(_blame(from_file, overrides, source), key_path, reason) from None


def _refuse_moved_keys(raw: dict[str, Any], from_file: dict[str, Any], source: str) -> None:
    """A key that moved into a subsection is an error that says where it went."""
    for (section, key), moved_to in MOVED_KEYS.items():
        node = raw.get(section)
        if isinstance(node, dict) and key in node:
            in_file = isinstance(from_file.get(section), dict) and key in from_file[section]
            raise ConfigError(source if in_file else "environment", f"{section}.{key}",
                              f"moved: set {moved_to} instead")


def _convert(raw: dict[str, Any]) -> Config:
    # Lax mode: PyYAML (YAML 1.1) reads "1e-6" as a string; accept numeric
    # and boolean strings where numbers and booleans are expected.
    return msgspec.convert(raw, Config, strict=False, dec_hook=_decode_secret)


def _decode_secret(kind: type, value: Any) -> Any:
    if kind is Secret and isinstance(value, str):
        return Secret(value)
    raise TypeError("a secret must be a string (quote it in YAML)")


def config_document(config: Config, *, reveal_secrets: bool = False) -> dict[str, Any]:
    """The config as plain data: secrets as ``***``, or as themselves for a child process's config file."""

    def encode(value: Any) -> Any:
        if isinstance(value, Secret):
            return value.reveal() if reveal_secrets else MASK
        raise TypeError(f"cannot encode {type(value).__name__}")

    document: dict[str, Any] = msgspec.to_builtins(config, enc_hook=encode)
    return document


def write_config_file(config: Config, path: Path) -> Path:
    """Write ``config`` as a file another ``streamer`` process can load (JSON is valid YAML).

    The file holds the secrets themselves (a child process needs them), so
    only its owner may read it.
    """
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(msgspec.json.encode(config_document(config, reveal_secrets=True)))
    return path


def _blame(from_file: dict[str, Any], overrides: Mapping[tuple[str, ...], Any], source: str) -> str:
    """The environment when the file alone is valid, else the file."""
    if not overrides:
        return source
    try:
        _convert(copy.deepcopy(from_file))
    except msgspec.ValidationError:
        return source
    return "environment"


def env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, ...], Any]:
    """Collect ``STREAMER__A__B=value`` variables as ``{("a", "b"): value}``.

    >>> env_overrides({"STREAMER__BATCHING__MAX_BATCH": "512", "HOME": "/root"})
    {('batching', 'max_batch'): 512}
    """
    overrides: dict[tuple[str, ...], Any] = {}
    for name, text in environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        key_path = tuple(part.lower() for part in name[len(ENV_PREFIX):].split("__") if part)
        if not key_path:
            continue
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        # Secrets stay strings even when they look like numbers.
        if key_path[-1] in _SECRET_KEYS:
            value = text
        overrides[key_path] = value
    return overrides


def masked(config: Config) -> dict[str, Any]:
    """The config as plain data with every secret replaced by ``***``."""
    return config_document(config)


def log_effective_config(config: Config) -> None:
    """Log the effective configuration once, secrets masked."""
    log.info("effective configuration: %s", msgspec.json.encode(masked(config)).decode())


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", f"not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", f"must be a mapping at the top level, got {type(data).__name__}")
    return data


def _set_path(raw: dict[str, Any], key_path: tuple[str, ...], value: Any, *, source: str) -> None:
    node = raw
    for depth, key in enumerate(key_path[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(source, ".".join(key_path[: depth + 1]), "is not a section")
        node = child
    node[key_path[-1]] = value


_ERROR_PATH = re.compile(r"^(?P<reason>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_MISSING = object()


_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")


def _split_validation_error(message: str) -> tuple[str, str]:
    match = _ERROR_PATH.match(message)
    if match is None:
        path, reason = "", message
    else:
        path = re.sub(r"\[(\d+)\]", r".\1", match["path"].lstrip("."))
        reason = match["reason"]
    unknown = _UNKNOWN_FIELD.match(reason)
    if unknown is not None:  # point at the key itself, not its section
        path = f"{path}.{unknown['name']}" if path else unknown["name"]
        reason = "unknown key"
    return path, reason


def _lookup(raw: dict[str, Any], key_path: str) -> Any:
    node: Any = raw
    for key in key_path.split(".") if key_path else []:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return _MISSING
    return node
