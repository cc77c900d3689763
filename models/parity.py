"""A bundle's parity record: the forecast its Keras model makes on a fixed input.

Written into ``bundle.json`` when the bundle is saved, from the model that
was trained; checked before a running daemon swaps the bundle in, with the
weights the daemon will actually use (``weights.npz``, the numpy step). A
mismatch means the two files of the bundle disagree, or the runtime computes
something other than what training computed: the bundle is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from models.weights import ForecasterWeights, forecast_windows

F32 = npt.NDArray[np.float32]
# Fixed inputs: a few windows of standard-normal (normalised) readings.
PARITY_ROWS = 4
PARITY_SEED = 20_261_207
# Keras (float32, fused kernels) and the numpy step agree to ~1e-6 on the
# shipped bundle (tests/models/test_backends.py uses 1e-5); 1e-3 leaves room
# for another BLAS, and a wrong or damaged weight moves forecasts far more.
PARITY_TOLERANCE = 1e-3


def parity_input(window: int, channels: int) -> F32:
    """The fixed input: ``(PARITY_ROWS, window, channels)``, the same on every machine."""
    rng = np.random.default_rng(PARITY_SEED)
    values: F32 = rng.standard_normal((PARITY_ROWS, window, channels)).astype(np.float32)
    return values


def record_parity(model: Any, window: int, channels: int) -> dict[str, Any]:
    """What ``bundle.json`` keeps: the Keras model's forecast after each fixed window."""
    expected = np.asarray(model(parity_input(window, channels)))[:, -1]
    return {"seed": PARITY_SEED, "rows": PARITY_ROWS, "forecast": expected.astype(float).round(7).tolist()}


def parity_error(weights: ForecasterWeights, window: int, record: dict[str, Any]) -> float:
    """Largest absolute difference between the numpy step on ``weights`` and the recorded forecast.

    Raises:
        ValueError: The record is malformed.
    """
    if record.get("seed") != PARITY_SEED or record.get("rows") != PARITY_ROWS:
        raise ValueError(f"parity record of another input: {record.get('seed')!r}, {record.get('rows')!r}")
    expected = np.asarray(record["forecast"], dtype=np.float64)
    actual = forecast_windows(weights, parity_input(window, weights.channels)).astype(np.float64)
    if expected.shape != actual.shape:
        raise ValueError(f"parity record of shape {expected.shape}, forecast {actual.shape}")
    return float(np.max(np.abs(actual - expected)))
