"""Distinct model bundles made cheaply from the shipped one, for registry tests.

A variant is the shipped bundle with one more key in its ``training`` record:
the content version covers the metadata, so each variant is a different
version, and it stays a valid bundle without training anything.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from models.bundle import METADATA_FILE, WEIGHTS_FILE, BundleMetadata, content_version, default_bundle_path
from models.parity import PARITY_ROWS, PARITY_SEED, parity_input
from models.weights import ForecasterWeights, forecast_windows


def bundle_variant(directory: Path, variant: int, *, mse_ratio: float = 0.5, head_shift: float = 0.0,
                   parity: str = "none", validation: dict[str, float] | None = None,
                   channels: list[str] | None = None) -> tuple[Path, str]:
    """Write variant ``variant`` of the shipped bundle into ``directory``; returns it and its version.

    Args:
        head_shift: Added to the output bias (normalised units): a model that
            forecasts differently.
        parity: ``none`` (no parity record, as the shipped bundle), ``true``
            (recorded from these weights) or ``false`` (a record these
            weights do not reproduce, as from a model.keras that differs).
        validation: Replaces the validation metrics.
        channels: Renames the channels (a bundle for another configuration).
    """
    shutil.copytree(default_bundle_path(), directory)
    document = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
    document["training"]["variant"] = variant
    document["validation"]["mse_ratio_to_naive"] = mse_ratio
    if validation is not None:
        document["validation"] = validation
    if channels is not None:
        document["channels"] = channels
    weights = ForecasterWeights.load(directory / WEIGHTS_FILE)
    if head_shift:
        weights = dataclasses.replace(weights, head_bias=weights.head_bias + np.float32(head_shift))
        weights.save(directory / WEIGHTS_FILE)
    if parity != "none":
        window = int(document["window"])
        forecast = forecast_windows(weights, parity_input(window, weights.channels))
        if parity == "false":
            forecast = forecast + 0.5
        document["parity"] = {"seed": PARITY_SEED, "rows": PARITY_ROWS,
                              "forecast": forecast.astype(float).round(7).tolist()}
    metadata = BundleMetadata.from_json(document)
    document["version"] = content_version((directory / WEIGHTS_FILE).read_bytes(), metadata)
    (directory / METADATA_FILE).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n",
                                           encoding="utf-8")
    return directory, str(document["version"])


def damage_weights(bundle_dir: Path) -> None:
    """Flip a byte in the middle of ``weights.npz``, as a bad disk or a hand edit would."""
    weights = bytearray((bundle_dir / WEIGHTS_FILE).read_bytes())
    weights[len(weights) // 2] ^= 0xFF
    (bundle_dir / WEIGHTS_FILE).write_bytes(bytes(weights))
