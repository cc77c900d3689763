"""Distinct model bundles made cheaply from the shipped one, for registry tests.

A variant is the shipped bundle with one more key in its ``training`` record:
the content version covers the metadata, so each variant is a different
version, and it stays a valid bundle without training anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from models.bundle import METADATA_FILE, WEIGHTS_FILE, BundleMetadata, content_version, default_bundle_path


def bundle_variant(directory: Path, variant: int, *, mse_ratio: float = 0.5) -> tuple[Path, str]:
    """Write variant ``variant`` of the shipped bundle into ``directory``; returns it and its version."""
    shutil.copytree(default_bundle_path(), directory)
    document = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
    document["training"]["variant"] = variant
    document["validation"]["mse_ratio_to_naive"] = mse_ratio
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
