"""Range novelty: a reading outside the range its device has shown recently.

After the "spatial anomaly" rule of Numenta's NAB detector. A one-step-ahead
forecaster follows a level shift after one reading, so its residual exposes a
jump to a never-seen level only briefly; the range does not forget it that
fast. Applied by the scoring pipeline after any threshold method (see
:func:`apply_novelty`): a novel reading gets score 1.0 and is flagged, whatever
its residual.

Per device and channel the range is the union of two blocks of ``horizon / 2``
readings: the current block and the one before it. When the current block is
full it becomes the previous one and a new block starts, so the range covers
between ``horizon / 2`` and ``horizon`` readings: an old extreme is forgotten
after at most ``horizon`` readings, at a cost of four floats per channel
instead of a ring. ``horizon=None`` keeps the all-time range.

A reading is novel when some channel lies more than ``margin`` times the
range's width outside it, once the device has shown ``min_readings`` readings
(a young range is narrow, and noise would leave it often). The range then
grows to include the reading, so a device that settles at its new level is
flagged once, not for as long as it stays there. A channel whose range is
still a single value is never novel (no scale to judge by). NaN readings are
skipped.

With ``quiet > 0`` (``thresholds.range_novelty.quiet_period``) a novel reading within
``quiet`` readings of the last one that was scored 1.0 keeps the method's
score: it is still flagged, but a slow drift that pushes the range outwards
every few readings shows one top score, not a burst of them.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streamer.config import RangeNoveltyConfig
from streamer.state.slot_table import SlotTable
from streamer.thresholds.result import ThresholdResult, override_channel

IndexArray = npt.NDArray[np.intp]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# The score a novel reading is reported with: above any threshold.
NOVEL_SCORE = 1.0


class RangeNovelty:
    """Readings outside their device's recent range, widened by a margin.

    >>> novelty = RangeNovelty(SlotTable(1), channels=1, margin=0.1)
    >>> slot = np.zeros(1, dtype=np.intp)
    >>> [bool(novelty.update(slot, np.array([[v]]))[0][0]) for v in (0.0, 10.0, 10.5, 12.0, 12.1)]
    [False, False, False, True, False]
    """

    def __init__(self, table: SlotTable, channels: int, margin: float,
                 horizon: int | None = None, min_readings: int = 0, quiet: int = 0) -> None:
        self.table = table
        self.margin = margin
        self.quiet = quiet
        self.block = None if horizon is None else max(horizon // 2, 1)
        self.min_readings = min_readings
        table.add_field("nov_min", (channels,), np.float64, np.nan)  # current block
        table.add_field("nov_max", (channels,), np.float64, np.nan)
        table.add_field("nov_prev_min", (channels,), np.float64, np.nan)  # previous block
        table.add_field("nov_prev_max", (channels,), np.float64, np.nan)
        table.add_field("nov_count", (), np.int64, 0)  # readings seen
        if quiet:
            # Reading count at the last novel reading reported with
            # NOVEL_SCORE; declared only when used, so the default state
            # layout (and snapshot schema) is unchanged.
            table.add_field("nov_reported", (), np.int64, -(2**62))

    def update(self, slots: IndexArray, values: Float64Array) -> tuple[BoolArray, npt.NDArray[np.intp]]:
        """Judge ``values`` (n, channels) against each slot's range, then widen the range.

        Returns:
            Whether each row is novel, and the channel farthest outside its
            range relative to the range's width (0 where none is).
        """
        t = self.table
        current_low = t["nov_min"][slots]
        current_high = t["nov_max"][slots]
        low = np.fmin(current_low, t["nov_prev_min"][slots])
        high = np.fmax(current_high, t["nov_prev_max"][slots])
        count = t["nov_count"][slots]
        width = high - low
        with np.errstate(invalid="ignore", divide="ignore"):
            # Distance beyond the range in units of its width; NaN (no range
            # or no reading) compares False.
            beyond = np.maximum(low - values, values - high) / width
        outside = (width > 0) & (beyond > self.margin)
        novel: BoolArray = outside.any(axis=1) & (count >= self.min_readings)
        channel = np.argmax(np.where(outside, beyond, -np.inf), axis=1)

        seen = np.isfinite(values)
        current_low = np.where(seen, np.fmin(current_low, values), current_low)
        current_high = np.where(seen, np.fmax(current_high, values), current_high)
        count = count + 1
        t["nov_count"][slots] = count
        if self.block is not None:
            roll = count % self.block == 0
            if roll.any():
                rows = slots[roll]
                t["nov_prev_min"][rows] = current_low[roll]
                t["nov_prev_max"][rows] = current_high[roll]
                current_low[roll] = np.nan
                current_high[roll] = np.nan
        t["nov_min"][slots] = current_low
        t["nov_max"][slots] = current_high
        return novel, channel

    def report(self, slots: IndexArray, novel: BoolArray) -> BoolArray:
        """Which ``novel`` rows (just judged by :meth:`update`) are reported with ``NOVEL_SCORE``.

        A novel reading within ``quiet`` readings of the device's last
        reported one is not: a drift that keeps nudging the range outwards
        (a warming machine, a growing audience) then costs one report, not
        one every few readings. It stays flagged. With ``quiet=0`` every
        novel reading is reported.
        """
        if not self.quiet:
            return novel
        t = self.table
        count = t["nov_count"][slots]  # update() has counted the reading already
        reported = t["nov_reported"][slots]
        shown: BoolArray = novel & (count - reported > self.quiet)
        t["nov_reported"][slots[shown]] = count[shown]
        return shown


def make_novelty(table: SlotTable, channels: int, config: RangeNoveltyConfig) -> RangeNovelty | None:
    """The range novelty ``config`` asks for (``margin: null`` turns it off)."""
    if config.margin is None:
        return None
    return RangeNovelty(table, channels, config.margin, config.horizon, config.min_readings,
                        config.quiet_period)


def apply_novelty(novelty: RangeNovelty, slots: IndexArray, values: Float64Array, scored: BoolArray,
                  decision: ThresholdResult) -> ThresholdResult:
    """``decision`` with the novel readings among ``scored`` ones raised to score 1.0 and flagged.

    A novel reading in its device's quiet period (:meth:`RangeNovelty.report`)
    is flagged but keeps the method's score.

    The range learns from every reading, warm-up included; only scored rows
    (past warm-up) may be novel. The method's own state is untouched: a novel
    reading does not stop it from learning what it would have learned.
    """
    novel, channel = novelty.update(slots, np.asarray(values, np.float64))
    novel &= scored
    if not novel.any():
        return decision
    shown = novelty.report(slots, novel)
    score = np.where(shown, NOVEL_SCORE, decision.score)
    return ThresholdResult(
        score=score,
        anomalous=decision.anomalous | novel,
        channel=np.where(novel, channel, decision.channel),
        smoothed=decision.smoothed,
        threshold=decision.threshold,
        channel_scores=override_channel(decision.channel_scores, novel, channel, score),
    )
