"""``streamer model list | add | promote | rollback | shadow | history``: the bundle registry by hand.

The registry itself (its layout, the atomic pointer swaps, ``current`` as a
stack) is :mod:`models.registry`; this module reads the arguments, finds the
registry directory and prints what changed, one line per change, in the form
``current: lstm-aaa -> lstm-bbb`` so that a deploy log reads as a history.

Exit codes: 0 done; 1 the registry refused (an unknown version, nothing to
roll back to, a damaged bundle), with one line ``streamer model <cmd>:
<reason>`` on stderr and the names unchanged; 2 no registry directory
configured (a :class:`~streamer.errors.ConfigError`, printed by the CLI).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.bundle import BundleError
from models.registry import BundleRegistry, HistoryEntry, RegistryError, VersionInfo
from streamer.config import Config
from streamer.errors import ConfigError

REGISTRY_KEY = "predictor.lstm.registry"
# How an unset name prints in a change line and in ``model list``.
NONE = "(none)"
# The name each history action changes.
_CHANGED_NAME = {"promote": "current", "rollback": "current", "shadow": "candidate", "unshadow": "candidate"}


def register(model_sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the registry commands to ``streamer model``'s subcommand parser."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--registry", type=Path, default=None, metavar="DIR",
                       help=f"registry directory (default: {REGISTRY_KEY} in --config)")
    note = argparse.ArgumentParser(add_help=False)
    note.add_argument("--note", default="", metavar="TEXT", help="why, kept in the registry's history")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print a JSON document instead of lines")

    listing = model_sub.add_parser(
        "list", parents=[common, where, as_json], help="list the registered versions",
        description="Every registered version, oldest first, with the names pointing at it "
                    "(current, candidate), when it was added and its validation metrics.")
    listing.set_defaults(registry_action="list")

    add = model_sub.add_parser(
        "add", parents=[common, where, note], help="register a bundle (prints its version)",
        description="Copy a bundle into the registry under its content version and print the version. "
                    "Adding a version that is already registered changes nothing.")
    add.add_argument("bundle", metavar="BUNDLE_DIR",
                     help='bundle directory, or "default" for the shipped bundle')
    then = add.add_mutually_exclusive_group()
    then.add_argument("--promote", action="store_true", help="then make it current")
    then.add_argument("--shadow", action="store_true", help="then make it the candidate")
    add.set_defaults(registry_action="add")

    promote = model_sub.add_parser(
        "promote", parents=[common, where, note], help="make a version current",
        description="Point current at VERSION (its bundle is checked first). A daemon following the "
                    "registry swaps to it between two batches. Promoting the candidate clears candidate.")
    promote.add_argument("version", help="a registered version (streamer model list)")
    promote.set_defaults(registry_action="promote")

    rollback = model_sub.add_parser(
        "rollback", parents=[common, where, note], help="make the previous current version current again",
        description="Point current back at the version it had before the latest promotion still in "
                    "force; repeated rollbacks walk further back.")
    rollback.set_defaults(registry_action="rollback")

    shadow = model_sub.add_parser(
        "shadow", parents=[common, where, note], help="make a version the candidate scored in shadow",
        description="Point candidate at VERSION (its bundle is checked first), or clear it. Daemons "
                    "score the candidate beside current; its alerts go to kafka.shadow_alert_topic.")
    target = shadow.add_mutually_exclusive_group(required=True)
    target.add_argument("version", nargs="?", default=None, help="a registered version")
    target.add_argument("--clear", action="store_true", help="no candidate")
    shadow.set_defaults(registry_action="shadow")

    history = model_sub.add_parser(
        "history", parents=[common, where, as_json], help="print every change of the registry",
        description="Every add, promotion, rollback and candidate change, oldest first, with who made "
                    "it and the note.")
    history.set_defaults(registry_action="history")

    for parser in (listing, add, promote, rollback, shadow, history):
        parser.set_defaults(command=f"model {parser.get_default('registry_action')}", handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    """Run the registry command ``args.registry_action``; print its result on stdout.

    Raises:
        ConfigError: Neither ``--registry`` nor ``predictor.lstm.registry`` names a directory.
    """
    action: str = args.registry_action
    registry = BundleRegistry(registry_root(args.registry, config))
    try:
        lines = _ACTIONS[action](registry, args)
    except (RegistryError, BundleError, OSError) as exc:
        sys.stderr.write(f"streamer model {action}: {exc}\n")
        return 1
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()
    return 0


def registry_root(flag: Path | None, config: Config) -> Path:
    """The registry directory: ``--registry``, else ``predictor.lstm.registry``.

    Raises:
        ConfigError: Neither is set.
    """
    if flag is not None:
        return flag
    configured = config.predictor.lstm.registry
    if not configured:
        raise ConfigError("<config>", REGISTRY_KEY, "not set: name the bundle registry directory here "
                                                    "or pass --registry DIR")
    return Path(configured)


def change_line(name: str, before: str | None, after: str | None) -> str:
    """One line saying what a name pointed at before and after a change.

    >>> change_line("current", "lstm-a", "lstm-b"), change_line("candidate", "lstm-b", None)
    ('current: lstm-a -> lstm-b', 'candidate: lstm-b -> (none)')
    >>> change_line("current", "lstm-a", "lstm-a")
    'current: lstm-a (unchanged)'
    """
    if before == after:
        return f"{name}: {after or NONE} (unchanged)"
    return f"{name}: {before or NONE} -> {after or NONE}"


# ---------------------------------------------------------------------- reading
def _list(registry: BundleRegistry, args: argparse.Namespace) -> list[str]:
    _require_existing(registry)
    infos = registry.versions()
    if args.json:
        document = {"registry": str(registry.root), "current": registry.pointer("current"),
                    "candidate": registry.pointer("candidate"), "versions": [_version_json(i) for i in infos]}
        return [json.dumps(document, indent=2)]
    if not infos:
        return [f"no versions in {registry.root}"]
    rows = [("VERSION", "NAMES", "ADDED", "VALIDATION")]
    rows += [(info.version, ",".join(info.names) or "-", info.added_at or "-", _metrics(info.validation))
             for info in infos]
    # Pad every column but the last (the metrics) to its widest cell.
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]])
            for row in rows]


def _history(registry: BundleRegistry, args: argparse.Namespace) -> list[str]:
    _require_existing(registry)
    entries = registry.history()
    if args.json:
        return [json.dumps({"registry": str(registry.root), "history": [e.to_json() for e in entries]},
                           indent=2)]
    if not entries:
        return [f"no history in {registry.root}"]
    return [_history_line(entry) for entry in entries]


def _require_existing(registry: BundleRegistry) -> None:
    # Reading a mistyped path should say so, not list an empty registry.
    if not registry.root.is_dir():
        raise RegistryError(f"no registry at {registry.root} (streamer model add creates it)")


def _version_json(info: VersionInfo) -> dict[str, Any]:
    return {"version": info.version, "names": list(info.names), "added_at": info.added_at or None,
            "path": str(info.path), "validation": info.validation}


def _metrics(validation: dict[str, float]) -> str:
    return " ".join(f"{name}={value:.4g}" if isinstance(value, int | float) else f"{name}={value}"
                    for name, value in sorted(validation.items())) or "-"


def _history_line(entry: HistoryEntry) -> str:
    if entry.action in _CHANGED_NAME:
        what = change_line(_CHANGED_NAME[entry.action], entry.previous, entry.version)
    else:
        what = f"versions: + {entry.version}"
    note = f"  ({entry.note})" if entry.note else ""
    return f"{entry.at}  {entry.action:<8}  {what}  by {entry.by}{note}"


# ---------------------------------------------------------------------- changes
def _add(registry: BundleRegistry, args: argparse.Namespace) -> list[str]:
    try:
        version = registry.add(args.bundle, note=args.note)
    except BundleError as exc:
        raise BundleError(f"{args.bundle}: {exc}") from None
    lines = [version]
    if args.promote:
        lines.append(_promote_line(registry, version, args.note))
    elif args.shadow:
        lines.append(change_line("candidate", registry.shadow(version, note=args.note), version))
    return lines


def _promote(registry: BundleRegistry, args: argparse.Namespace) -> list[str]:
    return [_promote_line(registry, args.version, args.note)]


def _promote_line(registry: BundleRegistry, version: str, note: str) -> str:
    was_candidate = registry.pointer("candidate") == version
    line = change_line("current", registry.promote(version, note=note), version)
    if was_candidate and registry.pointer("candidate") is None:
        line += "; " + change_line("candidate", version, None)
    return line


def _rollback(registry: BundleRegistry, args: argparse.Namespace) -> list[str]:
    before = registry.pointer("current")
    return [change_line("current", before, registry.rollback(note=args.note))]


def _shadow(registry: BundleRegistry, args: argparse.Namespace) -> list[str]:
    version = None if args.clear else args.version
    return [change_line("candidate", registry.shadow(version, note=args.note), version)]


_ACTIONS: dict[str, Callable[[BundleRegistry, argparse.Namespace], list[str]]] = {
    "list": _list, "history": _history, "add": _add, "promote": _promote, "rollback": _rollback,
    "shadow": _shadow,
}
