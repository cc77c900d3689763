"""Record gate: a flag stands only when its residual beats the device's recent largest.

A threshold on the residual's own statistics (the z-score above all) flags
every surprise relative to the last few hundred readings. Real telemetry is
full of surprises that the device makes routinely: a valve that toggles, a
counter that resets, a spike every few hours. Each is a new alert to the
threshold, and on spacecraft telemetry (MSL) most z-score alerts were such
repeats. Telemanom prunes them offline: an anomalous sequence must stand
clearly above the largest error outside it. This gate is the streaming form
of that idea: a reading the method flags is kept only if its residual's
magnitude, on the flagged channel, is larger than every residual the device
has shown over the last ``horizon`` readings (by more than ``margin`` of that
largest one). The gate runs right after the method, before range novelty and
the stuck-sensor check, so it only holds back the method's own flags.

The gate applies to the ``zscore`` method, which judges each residual (lightly
smoothed) as it comes. ``dynamic`` and ``likelihood`` judge residuals smoothed
or averaged over tens to hundreds of readings, so they flag after the raw
residual peaked, and a gate on the raw residual would hold back most of their
flags (on MSL, ``dynamic`` with this gate lost 8 of its 20 detections); they
are not gated.

The record covers *every* residual, flagged ones included: a jump the device
has just made once is routine for the next ``horizon`` readings, so an
anomaly of the same size within that span does not alert twice (the price
of the gate; a larger one does). The record is the larger of two blocks of
``horizon / 2`` readings, as in range novelty, so an old extreme is forgotten
after between half of ``horizon`` and ``horizon`` readings.

Until the record has learned ``min_readings`` residuals the gate holds back
every flag: a young record is small, and noise would beat it often.

The gate decides whether an episode *opens*. While one is open, the method's
flags stand without a record, so a sustained anomaly keeps its episode open
(a valve that stays shut is one alert that lasts, not one that resolves
while the fault goes on); on SKAB, gating those too cut point-wise F1 from
0.44 to 0.35. But only a record keeps the method's score: every other
reading keeps at most :data:`HELD_SCORE`, below the level at which the
z-score flags (0.935 at z = 5), as range novelty's quiet period does. A
score then marks where something new happened, and NAB, which ranks rows
by score and charges every high one outside a window, scored 32.9 instead
of 47.4 when continuation readings kept theirs. State per device: two
floats per channel and a count.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streamer.config import RecordGateConfig
from streamer.state.slot_table import SlotTable
from streamer.thresholds.result import ThresholdResult

IndexArray = npt.NDArray[np.intp]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Methods that judge each residual as it comes (see the module docstring).
GATED_METHODS = frozenset({"zscore"})
# Score ceiling of a reading the gate holds back: below every method's flag level.
HELD_SCORE = 0.49


class ResidualRecord:
    """The largest residual magnitude per device and channel over a sliding horizon.

    >>> record = ResidualRecord(SlotTable(1), channels=1, horizon=None, min_readings=2)
    >>> slot, channel = np.zeros(1, dtype=np.intp), np.zeros(1, dtype=np.intp)
    >>> [bool(record.update(slot, np.array([[r]]), channel)[0]) for r in (1.0, 3.0, 2.0, 4.0, -4.0)]
    [False, False, False, True, False]
    """

    def __init__(self, table: SlotTable, channels: int, *, horizon: int | None, margin: float = 0.0,
                 min_readings: int = 0) -> None:
        self.table = table
        self.block = None if horizon is None else max(horizon // 2, 1)
        self.margin = margin
        self.min_readings = min_readings
        table.add_field("rec_max", (channels,), np.float64, np.nan)  # current block
        table.add_field("rec_prev_max", (channels,), np.float64, np.nan)  # previous block
        table.add_field("rec_count", (), np.int64, 0)  # residuals learned

    def update(self, slots: IndexArray, residual: Float64Array, channel: IndexArray) -> BoolArray:
        """Whether each row's residual on ``channel`` beats its slot's record; then learn all channels.

        ``residual`` is (rows, channels); NaN residuals (rows not scored) are
        neither judged nor learned.
        """
        t = self.table
        magnitude = np.abs(residual)
        rows = np.arange(len(slots))
        current = t["rec_max"][slots]
        largest = np.fmax(current, t["rec_prev_max"][slots])[rows, channel]
        count = t["rec_count"][slots]
        value = magnitude[rows, channel]
        with np.errstate(invalid="ignore"):
            beaten = value > largest * (1.0 + self.margin)
        # A record needs a history: NaN (no residual learned yet) compares False.
        is_record: BoolArray = beaten & (count >= self.min_readings)

        learned = np.isfinite(magnitude).any(axis=1)
        current = np.fmax(current, magnitude)
        count = count + learned
        if self.block is not None:
            roll = learned & (count % self.block == 0)
            if roll.any():
                t["rec_prev_max"][slots[roll]] = current[roll]
                current[roll] = np.nan
        t["rec_max"][slots] = current
        t["rec_count"][slots] = count
        return is_record


def make_record_gate(table: SlotTable, channels: int, method: str,
                     config: RecordGateConfig) -> ResidualRecord | None:
    """The record gate ``config`` asks for (None when it is off or ``method`` is not gated)."""
    if not config.enabled or method not in GATED_METHODS:
        return None
    return ResidualRecord(table, channels, horizon=config.horizon, margin=config.margin,
                          min_readings=config.min_readings)


def apply_record_gate(record: ResidualRecord, slots: IndexArray, residual: Float64Array, scored: BoolArray,
                      decision: ThresholdResult, episode_open: BoolArray) -> ThresholdResult:
    """``decision`` with the method's flags kept at records and in open episodes; top scores at records only.

    ``episode_open``: whether each slot's alert episode is open. Only scored
    rows teach the record (warm-up residuals of a cold forecaster are large).
    The method's own state is untouched.
    """
    taught = np.where(scored[:, None], np.asarray(residual, np.float64), np.nan)
    is_record = record.update(slots, taught, decision.channel)
    # Every channel is held to the same ceiling, so the flagged one stays the highest.
    channel_scores = decision.channel_scores
    return ThresholdResult(
        score=np.where(is_record, decision.score, np.minimum(decision.score, HELD_SCORE)),
        anomalous=decision.anomalous & (is_record | episode_open),
        channel=decision.channel,
        smoothed=decision.smoothed,
        threshold=decision.threshold,
        channel_scores=np.where(is_record[:, None], channel_scores, np.minimum(channel_scores, HELD_SCORE)),
    )
