"""Whether a model bundle may replace the running one: loaded in safe mode, then checked.

Used at start-up (the registry's ``current``) and before a hot swap or a
shadow (:mod:`streamer.scoring.model_swap`, :mod:`streamer.runtime.models`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.bundle import BundleError, ModelBundle, load_bundle
from models.parity import PARITY_TOLERANCE, parity_error, parity_input
from models.weights import forecast_windows
from streamer.vocabulary import ModelRefusalReason


@dataclass(frozen=True)
class Refusal:
    """Why a bundle is not used."""

    reason: ModelRefusalReason
    detail: str


def check_bundle(bundle: ModelBundle, channels: Sequence[str]) -> Refusal | None:
    """Whether a loaded bundle may replace the running model (None: yes).

    Checks that it reads the configured channels, that it recorded finite
    validation metrics when it was trained, and that its forecast on the
    fixed parity input (:mod:`models.parity`) equals the one recorded from
    the trained Keras model. A bundle saved before parity records existed
    only has to forecast finite values there.
    """
    metadata = bundle.metadata
    if list(metadata.channels) != list(channels):
        return Refusal("channels", f"bundle channels {list(metadata.channels)} differ from readings.channels "
                                   f"{list(channels)}")
    validation = metadata.validation
    if not validation or not all(_finite(value) for value in validation.values()):
        return Refusal("validation", f"no finite validation metrics recorded: {validation!r}")
    if metadata.parity:
        try:
            error = parity_error(bundle.weights, metadata.window, metadata.parity)
        except (ValueError, KeyError, TypeError) as exc:
            return Refusal("parity", f"parity record unusable: {exc}")
        if not error <= PARITY_TOLERANCE:
            return Refusal("parity", f"forecast on the fixed input is {error:.3g} from the recorded one")
    else:
        forecast = forecast_windows(bundle.weights, parity_input(metadata.window, len(metadata.channels)))
        if not np.isfinite(forecast).all():
            return Refusal("parity", "forecasts on the fixed input are not finite")
    return None


def load_checked(path: Path, channels: Sequence[str]) -> ModelBundle | Refusal:
    """Load and check the bundle at ``path`` (blocking: call off the scorer)."""
    try:
        bundle = load_bundle(path)
    except BundleError as exc:
        return Refusal("unreadable", str(exc))
    refusal = check_bundle(bundle, channels)
    return bundle if refusal is None else refusal


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]  # anything float() takes
    except (TypeError, ValueError):
        return False
