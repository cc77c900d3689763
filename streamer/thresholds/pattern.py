"""Pattern novelty: has the device ever shown this short run of value levels?

A model-free raw anomaly score in the spirit of contextual detectors such as
CAD-OSE: instead of asking how far a reading lies from a forecast, it asks
whether the *pattern* of the last ``order`` readings, each quantised to one of
``buckets`` levels, has been seen before on this device. A daily cycle that
skips its peak, a level that is inside the usual range but is held where the
signal only ever passed through, spikes that come twice as often: all of them
make transitions the device never made, while a one-step forecaster follows
them after a reading or two.

Per device and channel:

1. *Levels.* The first ``learning`` readings fix the range ``[low, high]``
   (their minimum and maximum); afterwards a reading's level is
   ``floor(buckets * (value - low) / (high - low))`` (``high`` itself in the
   top one), with everything below the range in one extra level and
   everything above it in another (``buckets + 2`` levels in all). The range is frozen so that a pattern
   means the same thing forever; readings beyond it are range novelty's
   business (:mod:`streamer.thresholds.novelty`).
2. *Patterns.* The levels of the last ``order`` readings form one of
   ``(buckets + 2) ** order`` codes; a bit per code records whether the
   device has shown it (``(buckets + 2) ** order`` bytes per channel: 64 with
   the defaults). Bounded state, O(1) work per reading.
3. *Raw score.* 1.0 for a never-seen pattern, 0.0 otherwise, averaged over
   channels. Its rate falls as a device's repertoire fills up; the anomaly
   likelihood (:class:`streamer.thresholds.likelihood.LikelihoodStage`)
   judges a burst of novel patterns against that rate.

Until a device has ``learning`` readings there is no raw score (NaN); its
first pattern ends with the first reading after them (``learning >= order``,
so the earlier readings of that pattern exist). Rows with a NaN value on any
channel are skipped and leave the state untouched.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streamer.state.slot_table import SlotTable

IndexArray = npt.NDArray[np.intp]
Float64Array = npt.NDArray[np.float64]


class PatternNovelty:
    """Never-seen patterns of quantised levels, per device and channel.

    >>> pattern = PatternNovelty(SlotTable(1), channels=1, buckets=2, order=2, learning=4)
    >>> slot = np.zeros(1, dtype=np.intp)
    >>> [float(pattern.update(slot, np.array([[v]]))[0]) for v in (0, 1, 0, 1, 0, 1, 0.9, 0.9, 0)]
    [nan, nan, nan, nan, 1.0, 1.0, 1.0, 0.0, 0.0]
    """

    def __init__(self, table: SlotTable, channels: int, buckets: int, order: int, learning: int) -> None:
        if buckets < 1 or order < 1 or learning < order:
            raise ValueError("buckets and order must be >= 1 and learning >= order")
        self.table = table
        self.buckets = buckets
        self.order = order
        self.learning = learning
        self.levels = buckets + 2
        codes = self.levels**order
        # Place value of each of the last `order` levels (oldest first) in a code.
        self.place = self.levels ** np.arange(order - 1, -1, -1, dtype=np.int64)
        table.add_field("pat_low", (channels,), np.float64, np.inf)
        table.add_field("pat_high", (channels,), np.float64, -np.inf)
        # The previous order - 1 readings, oldest first.
        table.add_field("pat_prev", (channels, order - 1), np.float64, np.nan)
        table.add_field("pat_seen", (channels, codes), np.bool_, False)
        table.add_field("pat_count", (), np.int64, 0)  # readings seen

    def level(self, values: Float64Array, low: Float64Array, high: Float64Array) -> npt.NDArray[np.int64]:
        """Level in ``[0, buckets + 1]`` of ``values`` against ranges ``low``/``high`` (broadcast)."""
        width = np.where(high > low, high - low, 1.0)
        scaled = np.minimum(np.floor((values - low) / width * self.buckets), self.buckets - 1)
        scaled = np.where(values > high, self.buckets, np.maximum(scaled, -1))
        return (scaled + 1).astype(np.int64)

    def update(self, slots: IndexArray, values: Float64Array) -> Float64Array:
        """Score ``values`` (n, channels) of distinct ``slots``, then remember their patterns.

        Returns:
            Per row, the share of channels whose pattern is new (NaN while
            the device is still learning its range, or for a NaN reading).
        """
        t = self.table
        values = np.asarray(values, dtype=np.float64)
        valid = np.isfinite(values).all(axis=1)
        count = t["pat_count"][slots]
        low = t["pat_low"][slots]
        high = t["pat_high"][slots]
        prev = t["pat_prev"][slots]
        raw = np.full(len(slots), np.nan)

        learning = valid & (count < self.learning)
        if learning.any():
            rows = slots[learning]
            t["pat_low"][rows] = np.minimum(low[learning], values[learning])
            t["pat_high"][rows] = np.maximum(high[learning], values[learning])

        # Once the range is fixed; the pattern's earlier readings may be the
        # last ones of the learning period.
        judged = valid & (count >= self.learning)
        if judged.any():
            rows = slots[judged]
            window = np.concatenate([prev[judged], values[judged][:, :, None]], axis=2)
            lo = low[judged][:, :, None]
            hi = high[judged][:, :, None]
            code = self.level(window, lo, hi) @ self.place  # (rows, channels)
            channel = np.arange(values.shape[1])[None, :]
            seen = t["pat_seen"]
            novel = ~seen[rows[:, None], channel, code]
            seen[rows[:, None], channel, code] = True
            raw[judged] = novel.mean(axis=1)

        if self.order > 1:
            rows = slots[valid]
            shifted = np.concatenate([prev[valid][:, :, 1:], values[valid][:, :, None]], axis=2)
            t["pat_prev"][rows] = shifted
        t["pat_count"][slots[valid]] = count[valid] + 1
        return raw
