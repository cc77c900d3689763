"""Scoring a bundle on held-out readings, with the numpy forecaster (no TensorFlow).

Retraining compares two bundles on the same recent readings: each series
is normalised from its first reading (the daemon's causal statistics, so the
readings before the held-out part serve as context), and windows are cut
from the held-out part only, exactly like the validation sequences of
:func:`models.windows.make_sequences`. The metric is the weighted squared
error of the one-step forecast in normalised units
(:func:`forecast_errors`, the metric of the bundle's own
``validation``), so a smaller value is a better forecaster of these devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.bundle import BundleMetadata
from models.normalization import NormalizationSpec
from models.weights import ForecasterWeights, lstm_step, zero_state
from models.windows import Sequences, next_step_pairs, normalize_many, step_weights, window_starts

FloatArray = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ForecastErrors:
    """Weighted errors of a forecast against the targets, in normalised units."""

    mse: float
    mae: float


def forecast_errors(forecast: F32, sequences: Sequences) -> ForecastErrors:
    """Mean squared and absolute error over the weighted steps of ``sequences``.

    >>> from models.windows import Sequences
    >>> zeros = np.zeros((1, 3, 1), np.float32)
    >>> seqs = Sequences(zeros, zeros + 2, np.array([[0, 1, 1]], np.float32))
    >>> forecast_errors(zeros, seqs)
    ForecastErrors(mse=4.0, mae=2.0)
    """
    error = np.asarray(forecast, np.float64) - sequences.targets
    weights = sequences.weights.astype(np.float64)[..., None]
    total = float(weights.sum()) * error.shape[-1]
    if total == 0.0:
        raise ValueError("no weighted steps to evaluate")
    return ForecastErrors(float((weights * error**2).sum() / total),
                          float((weights * np.abs(error)).sum() / total))


@dataclass(frozen=True)
class HeldOut:
    """A series and the index of its first held-out reading."""

    values: FloatArray  # (time, channels), in time order
    start: int


def holdout_sequences(series: Sequence[HeldOut], spec: NormalizationSpec, *, window: int,
                      min_context: int, stride: int | None = None) -> Sequences:
    """Sequences whose inputs and targets are all held-out readings.

    A series with fewer than ``window + 1`` held-out readings contributes none.

    >>> ramp = np.arange(40.0)[:, None]
    >>> seqs = holdout_sequences([HeldOut(ramp, 20)], NormalizationSpec(), window=8, min_context=2, stride=4)
    >>> len(seqs), seqs.inputs.shape[1:]
    (3, (8, 1))
    """
    stride = stride or max(1, window // 4)
    weights = step_weights(window, min_context)
    arrays = [np.asarray(item.values, dtype=np.float64) for item in series]
    inputs: list[F32] = []
    targets: list[F32] = []
    for item, values, stats in zip(series, arrays, normalize_many(spec, arrays), strict=True):
        pair_inputs, pair_targets = next_step_pairs(spec, values, stats)
        # Pair t reads x_t and targets x_{t+1}: held-out pairs are t = start .. T - 2.
        starts = window_starts(item.start, len(values) - 1, window, stride)
        if len(starts):
            steps = starts[:, None] + np.arange(window)[None, :]
            inputs.append(pair_inputs[steps].astype(np.float32))
            targets.append(pair_targets[steps].astype(np.float32))
    channels = arrays[0].shape[1] if arrays else 1
    if not inputs:
        empty = np.zeros((0, window, channels), np.float32)
        return Sequences(empty, empty.copy(), np.zeros((0, window), np.float32))
    stacked = np.concatenate(inputs)
    return Sequences(stacked, np.concatenate(targets), np.broadcast_to(weights, stacked.shape[:2]).copy())


def sequence_forecasts(weights: ForecasterWeights, inputs: F32) -> F32:
    """The forecast after every step of each sequence ``(n, time, channels)``, from zero state.

    The same arithmetic as the Keras model over the whole sequence (its
    output at every step), stepped in numpy.
    """
    n, steps, channels = inputs.shape
    forecasts = np.empty((n, steps, channels), np.float32)
    h, c = zero_state(weights, n)
    for t in range(steps):
        forecasts[:, t], h, c = lstm_step(weights, np.ascontiguousarray(inputs[:, t]), h, c)
    return forecasts


def holdout_mse(metadata: BundleMetadata, weights: ForecasterWeights, series: Sequence[HeldOut], *,
                stride: int | None = None) -> float:
    """A forecaster's weighted mean squared one-step error on the held-out readings (normalised units).

    Args:
        metadata: Its normalisation, window and minimum context (a bundle's, or a new model's).
        weights: Its weights.
        series: The held-out series.
        stride: Steps between window starts (default ``window // 4``).

    Raises:
        ValueError: No series has enough held-out readings for one window.
    """
    sequences = holdout_sequences(series, metadata.normalization, window=metadata.window,
                                  min_context=metadata.min_context, stride=stride)
    if not len(sequences):
        raise ValueError(f"no series has {metadata.window + 1} held-out readings (the bundle's window + 1)")
    return forecast_errors(sequence_forecasts(weights, sequences.inputs), sequences).mse
