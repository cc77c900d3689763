"""Model bundles: everything the daemon needs to run a trained forecaster.

A bundle is a directory::

    model.keras    the Keras model (loaded with safe_mode=True)
    weights.npz    the same weights as plain arrays (numpy backend, no TensorFlow)
    bundle.json    architecture, normalisation, window, channels, suggested
                   threshold parameters, training data fingerprint,
                   validation metrics, and a version derived from the content

The version is a hash of ``weights.npz`` and the metadata, so two bundles with
the same version make the same forecasts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from models.architecture import ArchitectureSpec
from models.normalization import NormalizationSpec
from models.weights import ForecasterWeights

BUNDLE_FORMAT = 1
METADATA_FILE = "bundle.json"
KERAS_FILE = "model.keras"
WEIGHTS_FILE = "weights.npz"
# The bundle shipped inside the package (trained by `make bundle`).
DEFAULT_BUNDLE = "default"


@dataclass(frozen=True)
class BundleMetadata:
    """Everything in ``bundle.json`` except the version."""

    architecture: ArchitectureSpec
    normalization: NormalizationSpec
    window: int  # readings per window (window mode) and state restart period (stateful mode)
    min_context: int  # shortest history the training loss covered
    channels: tuple[str, ...]
    threshold: dict[str, float] = field(default_factory=dict)  # suggested threshold parameters
    training: dict[str, Any] = field(default_factory=dict)  # data fingerprint, rows, seed, command
    validation: dict[str, float] = field(default_factory=dict)  # metrics on the held-out time split
    # The model's forecast on a fixed input (models.parity), checked before a hot swap.
    parity: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``bundle.json``."""
        data = dataclasses.asdict(self)
        data["channels"] = list(self.channels)
        if not self.parity:
            # Bundles saved before parity records keep their content version.
            del data["parity"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BundleMetadata:
        """Parse what :meth:`to_json` wrote."""
        return cls(
            architecture=ArchitectureSpec(**data["architecture"]),
            normalization=NormalizationSpec(**data["normalization"]),
            window=int(data["window"]),
            min_context=int(data["min_context"]),
            channels=tuple(data["channels"]),
            threshold=dict(data.get("threshold", {})),
            training=dict(data.get("training", {})),
            validation=dict(data.get("validation", {})),
            parity=dict(data.get("parity", {})),
        )


@dataclass(frozen=True)
class ModelBundle:
    """A loaded bundle. The Keras model is loaded only on request."""

    path: Path
    metadata: BundleMetadata
    weights: ForecasterWeights
    version: str

    def keras_model(self) -> Any:
        """The Keras model, loaded in safe mode (no arbitrary code from the file)."""
        from models.tf_runtime import load_keras

        keras = load_keras()

        return keras.saving.load_model(self.path / KERAS_FILE, safe_mode=True, compile=False)

    def describe(self) -> dict[str, Any]:
        """What ``streamer model inspect`` prints."""
        return {"path": str(self.path), "version": self.version, "format": BUNDLE_FORMAT,
                **self.metadata.to_json()}


def content_version(weights_bytes: bytes, metadata: BundleMetadata) -> str:
    """Version from the weights and the metadata: same version, same forecasts."""
    digest = hashlib.sha256(weights_bytes)
    digest.update(json.dumps(metadata.to_json(), sort_keys=True).encode())
    return "lstm-" + digest.hexdigest()[:12]


def save_bundle(path: Path, model: Any, metadata: BundleMetadata) -> ModelBundle:
    """Write a bundle directory from a trained Keras model."""
    from models.parity import record_parity

    path.mkdir(parents=True, exist_ok=True)
    if not metadata.parity:
        metadata = dataclasses.replace(metadata, parity=record_parity(model, metadata.window,
                                                                      len(metadata.channels)))
    model.save(path / KERAS_FILE)
    weights = ForecasterWeights.from_model(model)
    weights.save(path / WEIGHTS_FILE)
    version = content_version((path / WEIGHTS_FILE).read_bytes(), metadata)
    document = {"format": BUNDLE_FORMAT, "version": version, **metadata.to_json()}
    (path / METADATA_FILE).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return ModelBundle(path, metadata, weights, version)


class BundleError(ValueError):
    """A bundle that cannot be used; the message says why (without the path, which the caller names)."""


def load_bundle(path: str | Path) -> ModelBundle:
    """Load a bundle directory (``"default"`` names the one shipped with the package).

    Raises:
        BundleError: The directory or one of its files is missing or unreadable,
            its format is unknown, or its content does not match its version
            (corrupt or edited).
    """
    directory = default_bundle_path() if str(path) == DEFAULT_BUNDLE else Path(path)
    if not directory.is_dir():
        raise BundleError("no such directory" if not directory.exists() else "not a directory")
    try:
        text = (directory / METADATA_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"no {METADATA_FILE}: not a model bundle") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{METADATA_FILE} cannot be read: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{METADATA_FILE} is not valid JSON (truncated?): {exc}") from None
    if not isinstance(document, dict) or document.get("format") != BUNDLE_FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise BundleError(f"unknown bundle format {found!r} (expected {BUNDLE_FORMAT!r})")
    try:
        metadata = BundleMetadata.from_json(document)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{METADATA_FILE} is incomplete or malformed: {exc!r}") from None
    try:
        weights_bytes = (directory / WEIGHTS_FILE).read_bytes()
    except OSError as exc:
        raise BundleError(f"{WEIGHTS_FILE} cannot be read: {exc.strerror or exc}") from None
    version = content_version(weights_bytes, metadata)
    if version != document.get("version"):
        raise BundleError(f"content does not match its version {document.get('version')!r} "
                          "(corrupt or edited)")
    try:  # numpy's loader raises any of these for a damaged archive
        weights = ForecasterWeights.load(directory / WEIGHTS_FILE)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{WEIGHTS_FILE} cannot be loaded: {exc!r}") from None
    return ModelBundle(directory, metadata, weights, version)


def default_bundle_path() -> Path:
    """Directory of the bundle shipped inside the ``models`` package."""
    return Path(str(resources.files("models").joinpath("bundles", DEFAULT_BUNDLE)))
