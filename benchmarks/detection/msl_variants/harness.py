"""Offline forecasts fed through the product's scoring path (experiment, not product code).

- PrecomputedPredictor: a Predictor whose forecast for a device's next reading
  is looked up from an array computed offline.
- stateful_forecasts: runs a Keras per-step model over a series the way the
  daemon's stateful LSTMPredictor does (two staggered states restarted every
  `window` readings; the forecast after reading t comes from a zero-state run
  over readings [16*(t//16) - 16, t] (from 0 for t < 16), i.e. 17..32 readings).
- evaluate_with: streamer.lab.evaluation.telemanom.evaluate with replay(..., predictor=P)
  (the module's `replay` name is rebound for the call; nothing on disk changes).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.normalization import NormalizationSpec, normalize_series
from streamer.config import load_config
from streamer.lab.evaluation import telemanom
from streamer.lab.evaluation.recipe import configured
from streamer.lab.evaluation.replay import replay as product_replay

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets" / "msl"
LABELS = DATA / "labeled_anomalies.csv"
SPEC = NormalizationSpec()
WINDOW = 32
MIN_CONTEXT = 8


def load_channels() -> tuple[list[telemanom.Channel], list[telemanom.Channel]]:
    """(labels rows, distinct channels in replay order)."""
    rows = telemanom.read_corpus(DATA, LABELS)
    return rows, telemanom._distinct(rows)


def full_series(channel: telemanom.Channel) -> np.ndarray:
    """Train then test, all 55 columns: what is replayed (column 0) and the model inputs."""
    return np.concatenate([channel.train, channel.test])


class PrecomputedPredictor:
    """Predictor protocol over precomputed forecasts.

    ``forecasts[i][t]`` is the forecast of reading t of the i-th replayed
    series (NaN: none). The registry hands out slots in order of first
    arrival and replay interleaves series by position, so slot i is series
    i; observe() checks that against the values it is shown.
    """

    name = "precomputed"

    def __init__(self, forecasts: Sequence[np.ndarray], values: Sequence[np.ndarray], tag: str) -> None:
        self.forecasts = [np.asarray(f, np.float64) for f in forecasts]
        self.values = [np.asarray(v, np.float64) for v in values]
        self.count = np.zeros(len(self.forecasts), np.int64)
        self.tag = tag
        self.mismatches = 0

    @property
    def version(self) -> str:
        return f"precomputed-{self.tag}"

    def forecast(self, slots: np.ndarray) -> np.ndarray:
        out = np.full((len(slots), 1), np.nan)
        for row, slot in enumerate(slots.tolist()):
            t = int(self.count[slot])
            if t < len(self.forecasts[slot]):
                out[row, 0] = self.forecasts[slot][t]
        return out

    def extra_rows(self) -> None:
        return None

    def observe(self, slots: np.ndarray, values: np.ndarray) -> None:
        for row, slot in enumerate(slots.tolist()):
            t = int(self.count[slot])
            if values[row, 0] != self.values[slot][t]:
                self.mismatches += 1
            self.count[slot] = t + 1


def stateful_forecasts(model, inputs: np.ndarray, horizons: int = 1) -> np.ndarray:
    """Per-step model outputs ``(T, horizons)`` as the stateful daemon would read them.

    Output row t is what the model says after reading inputs[0..t] with the
    staggered restart schedule (NaN for t < MIN_CONTEXT - 1).
    """
    steps = len(inputs)
    half = WINDOW // 2
    starts = np.arange(0, max(steps - half, 1), half)
    padded = np.zeros((steps + WINDOW, inputs.shape[1]), np.float32)
    padded[:steps] = inputs
    chunks = np.stack([padded[s:s + WINDOW] for s in starts])
    out = np.asarray(model.predict(chunks, batch_size=1024, verbose=0), np.float64)  # (n, W, H)
    result = np.full((steps, horizons), np.nan)
    t = np.arange(steps)
    start = np.where(t < half, 0, half * (t // half) - half)
    chunk_index = start // half
    result[:] = out[chunk_index, t - start, :horizons]
    result[: MIN_CONTEXT - 1] = np.nan
    return result


def sensor_forecasts(values: np.ndarray, outputs: np.ndarray, k: int) -> np.ndarray:
    """Forecast of reading t in sensor units from the k-step-ahead output made after reading t-k."""
    _, mean, std = normalize_series(SPEC, values[:, None])
    mean, std = mean[:, 0], std[:, 0]
    forecast = np.full(len(values), np.nan)
    forecast[k:] = mean[:-k] + std[:-k] * outputs[:-k, k - 1]
    return forecast


def config():
    return configured(load_config(None, environ={}), method=None, mode=None, bundle=None,
                      channels=("value",))


def evaluate_with(rows, predictor) -> telemanom.TelemanomReport:
    """telemanom.evaluate, its replay given ``predictor``."""
    original = telemanom.replay
    telemanom.replay = functools.partial(product_replay, predictor=predictor)
    try:
        return telemanom.evaluate(config(), rows)
    finally:
        telemanom.replay = original
