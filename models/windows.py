"""Training sequences: causal normalised inputs, next-step targets, loss weights.

For each device the inputs are the daemon's own normalised readings
``u_t = (x_t - mean_t) / std_t`` (:func:`models.normalization.normalize_series`)
and the target at step ``t`` is the next reading in the same units,
``(x_{t+1} - mean_t) / std_t``. Both use only statistics up to ``t``, so a
change to a later reading never changes an earlier input or target.

Sequences are ``window`` consecutive steps. The loss weight of a step is 0
until the model has read ``min_context`` readings of the sequence, then 1:
the network is judged only where it has history, as in serving.

The split is by time, per device: the first ``1 - val_fraction`` of each
device's readings train, the rest validate. No sequence crosses the split and
no training target is a validation reading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.normalization import NormalizationSpec, normalize, std_of, update_stats

FloatArray = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

# Devices normalised together in one vectorised pass; bounds the padding
# memory when series lengths differ widely.
_NORMALIZE_CHUNK = 512


@dataclass(frozen=True)
class Sequences:
    """Equal-length training sequences."""

    inputs: F32  # (n, window, channels) normalised readings
    targets: F32  # (n, window, channels) normalised next readings
    weights: F32  # (n, window) loss weight of each step

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def take(self, indices: IntArray) -> Sequences:
        """The sequences at ``indices``."""
        return Sequences(self.inputs[indices], self.targets[indices], self.weights[indices])

    def sample(self, limit: int | None, rng: np.random.Generator) -> Sequences:
        """At most ``limit`` sequences drawn without replacement (kept in order)."""
        if limit is None or len(self) <= limit:
            return self
        return self.take(np.sort(rng.choice(len(self), size=limit, replace=False)))


@dataclass(frozen=True)
class SplitSequences:
    """Training and validation sequences from the time split."""

    train: Sequences
    validation: Sequences


def step_weights(window: int, min_context: int) -> F32:
    """Loss weight of each step of a sequence: 1 once ``min_context`` readings are in.

    >>> step_weights(5, 3).tolist()
    [0.0, 0.0, 1.0, 1.0, 1.0]
    """
    if not 1 <= min_context <= window:
        raise ValueError(f"min_context must be in [1, window={window}], got {min_context}")
    weights = np.ones(window, np.float32)
    weights[: min_context - 1] = 0.0
    return weights


def normalize_many(
    spec: NormalizationSpec, series: Sequence[FloatArray]
) -> list[tuple[FloatArray, FloatArray, FloatArray]]:
    """:func:`models.normalization.normalize_series` over many series at once.

    Same arithmetic, vectorised across devices: series of different lengths
    are padded at the end, which cannot change earlier (causal) statistics.

    Returns:
        ``(u, mean, std)`` per series, each ``(time, channels)``.
    """
    results: list[tuple[FloatArray, FloatArray, FloatArray] | None] = [None] * len(series)
    order = sorted(range(len(series)), key=lambda i: len(series[i]))
    for first in range(0, len(order), _NORMALIZE_CHUNK):
        members = order[first:first + _NORMALIZE_CHUNK]
        steps = len(series[members[-1]])
        channels = series[members[0]].shape[1]
        stacked = np.zeros((len(members), steps, channels))
        for row, index in enumerate(members):
            stacked[row, : len(series[index])] = series[index]
        means = np.empty_like(stacked)
        stds = np.empty_like(stacked)
        mean = np.zeros((len(members), channels))
        var = np.zeros((len(members), channels))
        for t in range(steps):
            mean, var = update_stats(spec, mean, var, np.array(t), stacked[:, t])
            means[:, t] = mean
            stds[:, t] = std_of(spec, mean, var)
        u = normalize(spec, stacked, means, stds)
        for row, index in enumerate(members):
            n = len(series[index])
            results[index] = (u[row, :n], means[row, :n], stds[row, :n])
    return [item for item in results if item is not None]


def next_step_pairs(
    spec: NormalizationSpec, series: FloatArray, stats: tuple[FloatArray, FloatArray, FloatArray]
) -> tuple[FloatArray, FloatArray]:
    """Inputs ``u_t`` and targets ``(x_{t+1} - mean_t) / std_t`` for ``t < T - 1``.

    Targets are clipped to the spec's range like the inputs, so a few
    outliers cannot dominate the squared loss.
    """
    u, mean, std = stats
    return u[:-1], normalize(spec, series[1:], mean[:-1], std[:-1])


def window_starts(start: int, stop: int, window: int, stride: int) -> IntArray:
    """First step of each full window inside ``[start, stop)``.

    >>> window_starts(0, 10, 4, 3).tolist()
    [0, 3, 6]
    >>> window_starts(5, 8, 4, 1).tolist()
    []
    """
    return np.arange(start, stop - window + 1, stride, dtype=np.int64)


def split_point(steps: int, val_fraction: float) -> int:
    """First validation reading of a device with ``steps`` readings.

    >>> split_point(100, 0.1)
    90
    """
    return int(steps * (1.0 - val_fraction))


def make_sequences(
    series: Mapping[str, FloatArray],
    spec: NormalizationSpec,
    *,
    window: int,
    min_context: int,
    stride: int | None = None,
    val_fraction: float = 0.1,
) -> SplitSequences:
    """Cut every device's series into training and validation sequences.

    Args:
        series: Per-device readings ``(time, channels)`` in time order.
        spec: Normalisation, as stored in the bundle.
        window: Steps per sequence.
        min_context: Readings of history before a step counts in the loss.
        stride: Steps between sequence starts (default ``window // 4``).
        val_fraction: Share of each device's readings, at its end, held out.

    Readings ``[0, s)`` of a device train and ``[s, T)`` validate, with
    ``s = split_point(T, val_fraction)``: a training pair's target is at most
    reading ``s - 1``, and validation inputs start at reading ``s``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    stride = stride or max(1, window // 4)
    weights = step_weights(window, min_context)
    names = list(series)
    arrays = [np.asarray(series[name], dtype=np.float64) for name in names]
    parts: dict[str, list[tuple[F32, F32]]] = {"train": [], "validation": []}
    for values, stats in zip(arrays, normalize_many(spec, arrays), strict=True):
        inputs, targets = next_step_pairs(spec, values, stats)
        split = split_point(len(values), val_fraction)
        # Pair t reads x_t and targets x_{t+1}: training pairs end at t = s - 2.
        spans = {"train": (0, split - 1), "validation": (split, len(values) - 1)}
        for part, (start, stop) in spans.items():
            starts = window_starts(start, stop, window, stride)
            if len(starts):
                parts[part].append((_cut(inputs, starts, window), _cut(targets, starts, window)))
    channels = arrays[0].shape[1] if arrays else 1
    result = {part: _stack(pieces, weights, channels) for part, pieces in parts.items()}
    if not len(result["train"]):
        raise ValueError(f"no device has enough readings for a training sequence of {window} steps")
    return SplitSequences(result["train"], result["validation"])


def _cut(values: FloatArray, starts: IntArray, window: int) -> F32:
    steps = starts[:, None] + np.arange(window)[None, :]
    cut: F32 = values[steps].astype(np.float32)
    return cut


def _stack(pieces: list[tuple[F32, F32]], weights: F32, channels: int) -> Sequences:
    if not pieces:
        empty = np.zeros((0, len(weights), channels), np.float32)
        return Sequences(empty, empty.copy(), np.zeros((0, len(weights)), np.float32))
    inputs = np.concatenate([p[0] for p in pieces])
    targets = np.concatenate([p[1] for p in pieces])
    return Sequences(inputs, targets, np.broadcast_to(weights, inputs.shape[:2]).copy())
