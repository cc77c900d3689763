"""Rolling z-score of the smoothed residual.

Per device and channel the residual is smoothed by an EWMA, and the smoothed
residual is compared with an exponentially weighted mean and variance of its
own recent past. ``|z| >= z`` flags the reading. Flagged readings do not
update the mean and variance, so an anomaly never teaches itself normal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import erf

from streamer.config import ThresholdsConfig
from streamer.state.slot_table import SlotTable

IndexArray = npt.NDArray[np.intp]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_SQRT2 = float(np.sqrt(2.0))


@dataclass(frozen=True)
class ThresholdResult:
    """Decision for each reading of one round (one row per slot)."""

    score: Float64Array  # anomaly score in [0, 1], max over channels
    anomalous: BoolArray  # the decision
    channel: npt.NDArray[np.intp]  # channel with the highest score
    smoothed: Float64Array  # smoothed residual of that channel
    threshold: Float64Array  # the bound on the smoothed residual on that channel's side


def gaussian_score(z: Float64Array) -> Float64Array:
    """Two-sided Gaussian confidence that ``z`` is not noise: ``erf(|z| / sqrt(2))``.

    >>> gaussian_score(np.array([0.0, 1.0, 5.0])).round(4).tolist()
    [0.0, 0.6827, 1.0]
    """
    result: Float64Array = erf(np.abs(z) / _SQRT2)
    return result


class RollingZScore:
    """Exponentially weighted z-score threshold, vectorised over slots."""

    method = "zscore"

    def __init__(self, table: SlotTable, channels: int, config: ThresholdsConfig) -> None:
        self.table = table
        self.z = config.z
        self.smooth_alpha = 2.0 / (config.smoothing_span + 1.0)
        self.stats_alpha = 2.0 / (config.window + 1.0)
        self.min_var = config.min_std**2
        table.add_field("thr_smoothed", (channels,), np.float64, np.nan)
        table.add_field("thr_mean", (channels,), np.float64, 0.0)
        table.add_field("thr_var", (channels,), np.float64, 0.0)
        table.add_field("thr_count", (), np.int64, 0)

    def update(self, slots: IndexArray, residual: Float64Array, scored: BoolArray,
               values: Float64Array | None = None) -> ThresholdResult:
        """Score one residual per slot and learn from the unflagged ones.

        Args:
            slots: Distinct slots.
            residual: ``(n, channels)`` actual minus forecast; NaN rows are
                skipped (no forecast yet).
            scored: Rows past warm-up; only these can be flagged.
            values: The readings (unused: this method judges residuals only).
        """
        table = self.table
        valid = ~np.isnan(residual).any(axis=1)
        prev_smoothed = table["thr_smoothed"][slots]
        mean = table["thr_mean"][slots]
        var = table["thr_var"][slots]
        count = table["thr_count"][slots]

        first = np.isnan(prev_smoothed)
        smoothed = np.where(
            first, residual, self.smooth_alpha * residual + (1.0 - self.smooth_alpha) * prev_smoothed
        )
        std = np.sqrt(np.maximum(var, self.min_var))
        z = (smoothed - mean) / std
        z = np.where(np.isnan(z), 0.0, z)
        channel_flag = np.abs(z) >= self.z
        anomalous = scored & valid & (count > 1) & channel_flag.any(axis=1)

        # Learn from valid, unflagged readings only. Early on the weight is
        # 1/(n+1), so mean and variance are plain sample statistics until
        # the exponential window takes over.
        learn = valid & ~anomalous
        weight = np.maximum(self.stats_alpha, 1.0 / (count + 1.0))[:, None]
        diff = smoothed - mean
        new_mean = mean + weight * diff
        new_var = (1.0 - weight) * (var + weight * diff * diff)
        rows = slots[learn]
        table["thr_mean"][rows] = new_mean[learn]
        table["thr_var"][rows] = new_var[learn]
        table["thr_count"][rows] = count[learn] + 1
        table["thr_smoothed"][slots[valid]] = smoothed[valid]

        scores = gaussian_score(z)
        scores[~valid] = 0.0
        channel = np.argmax(scores, axis=1)
        take = np.arange(len(slots))
        side = np.sign(z[take, channel])
        bound = mean[take, channel] + side * self.z * std[take, channel]
        score = np.where(scored & valid, scores[take, channel], 0.0)
        return ThresholdResult(
            score=score,
            anomalous=anomalous,
            channel=channel,
            smoothed=smoothed[take, channel],
            threshold=bound,
        )
