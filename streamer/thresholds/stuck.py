"""Stuck sensors: a channel that repeats one value for far longer than its device ever has.

A forecast-residual detector cannot see a stuck sensor: a sensor that stopped
moving is *easier* to forecast, so its residual shrinks. This detector looks
at the readings themselves. Applied by the scoring pipeline after any
threshold method and range novelty (see :func:`apply_stuck`): a stuck reading
is flagged whatever its residual.

Per device and channel it keeps the current *run* of identical readings: a
reading within ``tolerance`` times the device's observed range (all-time
``max - min`` of the channel) of the run's first reading extends the run,
any other reading starts a new one. ``tolerance=0`` asks for exact repeats;
a small tolerance also catches a sensor whose variance collapsed to a
fraction of its usual spread. It also keeps the longest run the device has
shown while *not* flagged: a run that was flagged as stuck does not teach
the device that being stuck is normal.

A channel is stuck once the current run is longer than
``max(min_run, factor * longest)`` and the device had shown ``min_readings``
readings before the run began. The factor over the device's own history
keeps quiet the channels that are naturally constant for long stretches (a
valve that is shut, a counter at zero at night); ``min_run`` is the bar for
a device that never repeats itself. A run that began with the device's first
readings is never judged (there was no history to judge it by; spacecraft
channels that start constant for thousands of readings would otherwise be
stuck at once), and it teaches the device like any unflagged run.

A stuck channel stays flagged until its run ends, so the alert episode stays
open; only the first stuck reading of a run is reported with
:data:`STUCK_SCORE`, later ones keep the method's score (as range novelty's
quiet period does: NAB charges every flagged row outside a window, so a run
of top scores would cost one false positive each).

State per device: per channel the run's first value, its length, the
longest normal run and a flag (25 bytes; 16 more for the range when
``tolerance`` is used), and a reading count; O(1) work per reading. NaN
readings leave their channel's run untouched.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streamer.config import StuckConfig
from streamer.state.slot_table import SlotTable
from streamer.thresholds.result import ThresholdResult, override_channel

IndexArray = npt.NDArray[np.intp]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# The score the first stuck reading of a run is reported with: above any threshold.
STUCK_SCORE = 1.0


class StuckSensor:
    """Runs of identical readings far longer than the device's longest normal run.

    >>> stuck = StuckSensor(SlotTable(1), channels=1, min_run=3, factor=2.0)
    >>> slot, everyone = np.zeros(1, dtype=np.intp), np.ones(1, dtype=bool)
    >>> readings = (1.0, 1.0, 2.0, 3.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 5.0)
    >>> [bool(stuck.update(slot, np.array([[v]]), everyone)[0][0]) for v in readings]
    [False, False, False, False, False, False, False, False, True, True, False]
    """

    def __init__(self, table: SlotTable, channels: int, min_run: int, factor: float,
                 tolerance: float = 0.0, min_readings: int = 0) -> None:
        if min_run < 1 or factor < 1 or not 0 <= tolerance < 1 or min_readings < 0:
            raise ValueError("need min_run >= 1, factor >= 1, 0 <= tolerance < 1 and min_readings >= 0")
        self.table = table
        self.min_run = min_run
        self.factor = factor
        self.tolerance = tolerance
        self.min_readings = min_readings
        table.add_field("stk_first", (channels,), np.float64, np.nan)  # the run's first reading
        table.add_field("stk_run", (channels,), np.int64, 0)  # readings in the current run
        table.add_field("stk_longest", (channels,), np.int64, 0)  # longest run not flagged
        table.add_field("stk_stuck", (channels,), np.bool_, False)  # the current run is flagged
        table.add_field("stk_count", (), np.int64, 0)  # readings seen
        if tolerance:
            # The observed range the tolerance is a share of; declared only
            # when used, so exact repeats cost no more state than they need.
            table.add_field("stk_low", (channels,), np.float64, np.nan)
            table.add_field("stk_high", (channels,), np.float64, np.nan)

    def update(self, slots: IndexArray, values: Float64Array,
               scored: BoolArray) -> tuple[BoolArray, BoolArray, IndexArray]:
        """Extend or restart each channel's run with ``values`` (n, channels) of distinct ``slots``.

        Only rows in ``scored`` may be stuck; every row extends the runs.

        Returns:
            Per row: whether a channel is stuck, whether one became stuck
            with this reading (its run's first stuck reading), and the stuck
            channel whose run is longest relative to its bar (0 where none).
        """
        t = self.table
        values = np.asarray(values, np.float64)
        # take() gathers rows about twice as fast as fancy indexing (measured:
        # 1.1 vs 2.3 us for 512 of 100,000 rows).
        first = t["stk_first"].take(slots, axis=0)
        run = t["stk_run"].take(slots, axis=0)
        longest = t["stk_longest"].take(slots, axis=0)
        was_stuck = t["stk_stuck"].take(slots, axis=0)
        count = t["stk_count"].take(slots)

        if self.tolerance:
            seen = np.isfinite(values)
            low = t["stk_low"].take(slots, axis=0)
            high = t["stk_high"].take(slots, axis=0)
            # NaN (no range yet) leaves a width of 0: exact repeats only.
            width = np.nan_to_num(high - low)
            same = np.abs(values - first) <= self.tolerance * width
            t["stk_low"][slots] = np.where(seen, np.fmin(low, values), low)
            t["stk_high"][slots] = np.where(seen, np.fmax(high, values), high)
            restart = seen & ~same
        else:
            same = values == first  # NaN compares False
            restart = ~same & (values == values)  # a reading that is not NaN
        # The run that ends teaches the device its normal runs, unless it was flagged.
        longest = np.where(restart & ~was_stuck, np.maximum(longest, run), longest)
        run = np.where(restart, 1, run + same)
        t["stk_first"][slots] = np.where(restart, values, first)
        t["stk_run"][slots] = run
        t["stk_longest"][slots] = longest
        t["stk_count"][slots] = count + 1

        rows = len(slots)
        # The bar is at least min_run: most rounds have no run that long.
        if not (run > self.min_run).any():
            if was_stuck.any():
                t["stk_stuck"][slots] = False  # every flagged run has ended
            nothing = np.zeros(rows, dtype=bool)
            return nothing, nothing, np.zeros(rows, dtype=np.intp)
        bar = np.maximum(self.min_run, self.factor * longest)
        # Readings the device had shown before the run began: a run that
        # began before there was a history to judge it by is never stuck.
        before = count[:, None] - run + 1
        stuck: BoolArray = same & (run > bar) & (before >= self.min_readings) & scored[:, None]
        # A run stays flagged once it was, even through unscored rows.
        t["stk_stuck"][slots] = stuck | (was_stuck & ~restart)
        flagged: BoolArray = np.logical_or.reduce(stuck, axis=1)
        newly: BoolArray = np.logical_or.reduce(stuck & ~was_stuck, axis=1)
        channel: IndexArray = np.argmax(np.where(stuck, run / bar, -np.inf), axis=1)
        return flagged, newly, channel


def make_stuck(table: SlotTable, channels: int, config: StuckConfig) -> StuckSensor | None:
    """The stuck-sensor detector ``config`` asks for (None when ``enabled`` is false)."""
    if not config.enabled:
        return None
    return StuckSensor(table, channels, config.min_run, config.factor, config.tolerance, config.min_readings)


def apply_stuck(stuck: StuckSensor, slots: IndexArray, values: Float64Array, scored: BoolArray,
                decision: ThresholdResult) -> ThresholdResult:
    """``decision`` with the stuck readings among ``scored`` ones flagged.

    The first stuck reading of a run scores :data:`STUCK_SCORE`; the later
    ones keep the method's score but stay flagged, so the episode stays open
    for as long as the sensor is stuck. The method's own state is untouched.
    """
    flagged, newly, channel = stuck.update(slots, values, scored)
    if not flagged.any():
        return decision
    score = np.where(newly, STUCK_SCORE, decision.score)
    return ThresholdResult(
        score=score,
        anomalous=decision.anomalous | flagged,
        channel=np.where(flagged, channel, decision.channel),
        smoothed=decision.smoothed,
        threshold=decision.threshold,
        channel_scores=override_channel(decision.channel_scores, flagged, channel, score),
    )
