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

*Context* (optional, ``context_span``): the pattern code also carries the
level of an exponentially weighted moving average of the readings (span
``context_span``, over every valid reading, as it stood before the current
one), quantised to ``context_buckets`` levels of the same frozen range (plus
the two beyond it). A pair of levels that is ordinary at the device's usual
operating point but never seen while the signal sits elsewhere (a daily
shape at the wrong time, a burst in a quiet regime) is then novel. It
multiplies the codes by ``context_buckets + 2`` (256 bytes per channel with
the defaults and 2 context buckets) and adds one float per channel.

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

    def __init__(self, table: SlotTable, channels: int, buckets: int, order: int, learning: int,
                 context_span: int | None = None, context_buckets: int = 2) -> None:
        if buckets < 1 or order < 1 or learning < order:
            raise ValueError("buckets and order must be >= 1 and learning >= order")
        if context_span is not None and (context_span < 1 or context_buckets < 1):
            raise ValueError("context_span and context_buckets must be >= 1")
        self.table = table
        self.buckets = buckets
        self.order = order
        self.learning = learning
        self.levels = buckets + 2
        self.context_span = context_span
        self.context_buckets = context_buckets
        # Context levels per code: 1 (no context) or context_buckets + 2.
        self.context_levels = 1 if context_span is None else context_buckets + 2
        codes = self.levels**order * self.context_levels
        # Place value of each of the last `order` levels (oldest first) in a code.
        self.place = self.levels ** np.arange(order - 1, -1, -1, dtype=np.int64)
        table.add_field("pat_low", (channels,), np.float64, np.inf)
        table.add_field("pat_high", (channels,), np.float64, -np.inf)
        # The previous order - 1 readings, oldest first.
        table.add_field("pat_prev", (channels, order - 1), np.float64, np.nan)
        table.add_field("pat_seen", (channels, codes), np.bool_, False)
        table.add_field("pat_count", (), np.int64, 0)  # readings seen
        if context_span is not None:
            self.context_alpha = 2.0 / (context_span + 1.0)
            # Moving average of the readings; declared only when used, so the
            # default state layout (and snapshot schema) is unchanged.
            table.add_field("pat_context", (channels,), np.float64, np.nan)

    def level(self, values: Float64Array, low: Float64Array, high: Float64Array,
              buckets: int | None = None) -> npt.NDArray[np.int64]:
        """Level in ``[0, buckets + 1]`` of ``values`` against ranges ``low``/``high`` (broadcast).

        ``buckets`` defaults to the pattern's own.
        """
        buckets = self.buckets if buckets is None else buckets
        width = np.where(high > low, high - low, 1.0)
        scaled = np.minimum(np.floor((values - low) / width * buckets), buckets - 1)
        scaled = np.where(values > high, buckets, np.maximum(scaled, -1))
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
            if self.context_span is not None:
                # The average as it stood before this reading.
                context = self.level(t["pat_context"][rows], low[judged], high[judged], self.context_buckets)
                code = code * self.context_levels + context
            channel = np.arange(values.shape[1])[None, :]
            seen = t["pat_seen"]
            novel = ~seen[rows[:, None], channel, code]
            seen[rows[:, None], channel, code] = True
            raw[judged] = novel.mean(axis=1)

        if self.context_span is not None:
            rows = slots[valid]
            average = t["pat_context"][rows]
            current = values[valid]
            t["pat_context"][rows] = np.where(np.isnan(average), current,
                                              average + self.context_alpha * (current - average))
        if self.order > 1:
            rows = slots[valid]
            shifted = np.concatenate([prev[valid][:, :, 1:], values[valid][:, :, None]], axis=2)
            t["pat_prev"][rows] = shifted
        t["pat_count"][slots[valid]] = count[valid] + 1
        return raw
