"""Rolling z-score of the smoothed residual.

Per device and channel the residual is smoothed by an EWMA, and the smoothed
residual is compared with an exponentially weighted mean and variance of its
own recent past. ``|z| >= z`` flags the reading. Flagged readings do not
update the mean and variance, so an anomaly never teaches itself normal.

The standard deviation has two floors: ``min_std``, and ``min_std_fraction``
of the device's observed range (all-time max - min of the readings, when the
pipeline passes them). The second keeps a signal that was flat for a while
from turning its next small step into a z of 1e10.

The score is :func:`tail_score` of z: it keeps ranking large deviations
(z = 20 above z = 10) where the Gaussian confidence ``erf`` has long rounded
to 1.0, so scores stay comparable across devices and one corpus-wide cut on
them means something.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.special import log_ndtr

from streamer.config import ZScoreConfig
from streamer.state.slot_table import SlotTable
from streamer.thresholds.result import ThresholdResult

IndexArray = npt.NDArray[np.intp]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_LOG2 = float(np.log(2.0))


def tail_score(z: Float64Array) -> Float64Array:
    """Anomaly score in [0, 1) of ``z``: ``s / (1 + s)`` with ``s = -ln p``.

    ``p = 2 * Phi(-|z|)`` is the two-sided Gaussian tail probability, computed
    in logs so that it never underflows; ``s`` is its surprise in nats. The
    score rises with ``|z|`` without saturating (it reaches 1.0 in floating
    point only near ``|z| = 1e8``): 0 at z = 0, 0.76 at 2, 0.935 at 5, 0.99
    at 13.9 (``erf`` gives 0.954 at 2 and rounds to 1.0 from 8.3). A score
    ``s`` means a tail probability of ``exp(-s / (1 - s))``.

    >>> tail_score(np.array([0.0, 2.0, 5.0, 10.0, 40.0])).round(4).tolist()
    [0.0, 0.7555, 0.9349, 0.9813, 0.9988]
    """
    # At z = 0 the sum is -0.0 or a rounding hair above 0: clip to 0.
    surprise = np.maximum(-(log_ndtr(-np.abs(z)) + _LOG2), 0.0)
    result: Float64Array = surprise / (1.0 + surprise)
    return result


class RollingZScore:
    """Exponentially weighted z-score threshold, vectorised over slots."""

    method = "zscore"

    def __init__(self, table: SlotTable, channels: int, config: ZScoreConfig) -> None:
        self.table = table
        self.z = config.z
        self.smooth_alpha = 2.0 / (config.smoothing_span + 1.0)
        self.stats_alpha = 2.0 / (config.window + 1.0)
        self.min_var = config.min_std**2
        self.range_fraction = config.min_std_fraction
        table.add_field("thr_smoothed", (channels,), np.float64, np.nan)
        table.add_field("thr_mean", (channels,), np.float64, 0.0)
        table.add_field("thr_var", (channels,), np.float64, 0.0)
        table.add_field("thr_count", (), np.int64, 0)
        # All-time range of the readings, for the relative floor.
        table.add_field("thr_min", (channels,), np.float64, np.nan)
        table.add_field("thr_max", (channels,), np.float64, np.nan)

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
        floored = np.maximum(var, self.min_var)
        if values is not None and self.range_fraction > 0:
            floored = self._range_floor(slots, np.asarray(values, np.float64), floored)
        std = np.sqrt(floored)
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

        scores = tail_score(z)
        judged = (scored & valid)[:, None]
        if residual.shape[1] == 1:
            # One channel (the usual case): column views instead of a fancy-indexed pick per array.
            channel: IndexArray = np.zeros(len(slots), dtype=np.intp)
            channel_scores = np.where(judged, scores, 0.0)
            picked = (z[:, 0], mean[:, 0], std[:, 0], channel_scores[:, 0], smoothed[:, 0])
        else:
            scores[~valid] = 0.0
            channel = np.argmax(scores, axis=1)
            channel_scores = np.where(judged, scores, 0.0)
            take = np.arange(len(slots))
            picked = (z[take, channel], mean[take, channel], std[take, channel],
                      channel_scores[take, channel], smoothed[take, channel])
        z_at, mean_at, std_at, score_at, smoothed_at = picked
        return ThresholdResult(
            score=score_at,
            anomalous=anomalous,
            channel=channel,
            smoothed=smoothed_at,
            threshold=mean_at + np.sign(z_at) * self.z * std_at,
            channel_scores=channel_scores,
        )

    def _range_floor(self, slots: IndexArray, values: Float64Array, floor: Float64Array) -> Float64Array:
        """Raise ``floor`` (variances) to ``(min_std_fraction * range)**2``; widen the range."""
        low = self.table["thr_min"][slots]
        high = self.table["thr_max"][slots]
        # The range before this reading: a jump does not lower its own z.
        width = np.nan_to_num(high - low)
        seen = np.isfinite(values)
        self.table["thr_min"][slots] = np.where(seen, np.fmin(low, values), low)
        self.table["thr_max"][slots] = np.where(seen, np.fmax(high, values), high)
        result: Float64Array = np.maximum(floor, (self.range_fraction * width) ** 2)
        return result
