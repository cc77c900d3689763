"""A second model version without training one: a relabelled copy of a bundle.

The swap benchmark and chaos runs with swaps need a registry holding two
distinct versions. Training one takes minutes, and a model that forecasts
differently would change which readings alert, which the chaos verdict
compares with a fault-free reference. So the second version is the first
one relabelled: the same weights with one more key in the ``training``
record. A bundle's version is a digest of its weights and metadata
(:func:`models.bundle.content_version`), so the copy is a distinct version,
and a daemon swapping to it does every step of a real swap (load, checks,
rebuilding every device's forecaster state from its ring buffer, switch),
while forecasting as the original does, except where the rebuild differs
from the state it replaces.

``head_shift`` moves the output bias instead (normalised units): a model
that forecasts differently, for runs that want one.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from models.bundle import METADATA_FILE, WEIGHTS_FILE, BundleMetadata, content_version
from models.parity import PARITY_ROWS, PARITY_SEED, parity_input
from models.registry import BundleRegistry
from models.weights import ForecasterWeights, forecast_windows


def relabelled_bundle(source: Path, directory: Path, label: str, *, head_shift: float = 0.0) -> str:
    """Write a copy of the bundle ``source`` into ``directory`` as another version; returns the version.

    Args:
        source: A bundle directory (``bundle.json`` and ``weights.npz``).
        directory: Where the copy goes (must not exist).
        label: Recorded as ``training.relabelled``: each label is another version.
        head_shift: Added to the output bias (normalised units); 0 keeps the forecasts.

    Raises:
        FileExistsError: ``directory`` exists.
    """
    shutil.copytree(source, directory)
    document = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
    document["training"] = {**document.get("training", {}), "relabelled": label}
    if head_shift:
        weights = ForecasterWeights.load(directory / WEIGHTS_FILE)
        weights = dataclasses.replace(weights, head_bias=weights.head_bias + np.float32(head_shift))
        weights.save(directory / WEIGHTS_FILE)
        if document.get("parity"):
            # The parity record must be the shifted weights' own, or the daemon refuses the bundle.
            forecast = forecast_windows(weights, parity_input(int(document["window"]), weights.channels))
            document["parity"] = {"seed": PARITY_SEED, "rows": PARITY_ROWS,
                                  "forecast": forecast.astype(float).round(7).tolist()}
    document.pop("version", None)
    metadata = BundleMetadata.from_json(document)
    version = content_version((directory / WEIGHTS_FILE).read_bytes(), metadata)
    document["version"] = version
    (directory / METADATA_FILE).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n",
                                           encoding="utf-8")
    return version


def two_version_registry(root: Path, source: Path, scratch: Path) -> tuple[str, str]:
    """A registry at ``root`` with ``source`` promoted as ``current`` and a relabelled copy beside it.

    Returns:
        ``(current, other)``: the two versions.
    """
    registry = BundleRegistry(root)
    first = registry.add(source, note="benchmark: the running version")
    registry.promote(first, note="benchmark start")
    relabelled_bundle(source, scratch / "relabelled", "swap-benchmark")
    second = registry.add(scratch / "relabelled", note="benchmark: a relabelled copy (same weights)")
    return first, second
