"""Per-device adjustments that operator feedback makes, and the gate that applies them.

Everything here lives in the device slot table (``op_*`` fields), so it is
snapshotted and moves with the device's partition like the rest of its
detector state.

Sensitivity is a *bar* per channel on the row's **surprise**, the score read
as odds, ``score / (1 - score)`` (for the z-score that is ``-ln p`` of the
smoothed residual's z; for the likelihood, ``L / (1 - L)``). Untouched, the
bar is the method's own: the surprise at which it flags (its *base*).

- ``false_alarm`` raises the bar of the channel that raised the alert to the
  episode's peak surprise times ``1 + feedback.margin``: a flag of the same
  size on that channel no longer opens an episode, a larger one still does
  (inside an open episode flags stand, so one incident stays one episode). The bar
  never goes above ``feedback.max_factor`` times the base, so one click cannot
  blind a device.
- ``missed`` lowers the bar (the channel's, or every channel's) by
  ``feedback.missed_step`` of the base, down to ``feedback.min_factor`` times
  it: readings the method alone would not flag now open episodes. Methods
  without a base in surprise (``dynamic``) can only be made less sensitive; a
  missed anomaly clears their raised bars.
- Both decay back to the base with a half-life of
  ``feedback.half_life_readings`` readings of the device.
- ``new_normal`` forgets the device's forecaster normalisation and state,
  threshold history, range and stuck-run statistics (everything but its ring
  buffer, episodes and these adjustments), now or at its first reading at or
  after ``from_ts``, and clears its bars; the device is not flagged again
  until ``thresholds.warmup`` readings later.
- ``mute`` suppresses alerts for readings before ``until_ts`` (readings are
  still scored; suppressed flags are counted); ``unmute`` ends it.
- ``confirmed`` changes nothing but the episode's verdict (for precision).

Idempotence: a false alarm or confirmation answers one episode (the device
keeps its last :data:`EPISODES_KEPT` episodes with their peak and verdict);
answering it again is a duplicate. Every applied message's digest is kept in
a ring of :data:`DIGESTS_KEPT` per device, so the same message twice changes
nothing more.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamer.alerts.episodes import EpisodeChanges, alert_id
from streamer.config import FeedbackConfig, ThresholdsConfig
from streamer.feedback.messages import Feedback, FeedbackRejection
from streamer.feedback.rules import NO_RULE, RuleBook
from streamer.state.registry import BOOKKEEPING_FIELDS
from streamer.state.slot_table import SlotTable
from streamer.thresholds.result import ThresholdResult
from streamer.thresholds.zscore import tail_score
from streamer.vocabulary import SuppressionReason

IndexArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]
Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]

# Bits of op_flags: which adjustments a device has (0: none, the fast path).
BARS, MUTED, RENEWED, RENEW_PENDING = 1, 2, 4, 8
# Small on purpose: every device carries these in memory and in each snapshot (136 bytes
# per device in all, for one channel); operators answer recent alerts.
EPISODES_KEPT = 4
DIGESTS_KEPT = 4
NO_EPISODE = -1
NO_VERDICT, FALSE_ALARM, CONFIRMED = 0, 1, 2
_NEVER = np.iinfo(np.int64).max
# Fields new_normal keeps: the registry's, the ring buffer, episodes and these adjustments.
_KEPT_FIELDS = ("last_ts", "seen", "ring", "ring_head", "ring_filled", *BOOKKEEPING_FIELDS)
_KEPT_PREFIXES = ("ep_", "op_")


def base_surprise(config: ThresholdsConfig) -> float | None:
    """The surprise at which ``config.method`` flags, or None where it has none (``dynamic``).

    >>> from streamer.config import ThresholdsConfig
    >>> round(base_surprise(ThresholdsConfig()), 2)  # z = 5
    14.37
    """
    if config.method == "zscore":
        score = float(tail_score(np.array([config.zscore.z]))[0])
        return score / (1.0 - score)
    if config.method == "likelihood":
        return config.likelihood.threshold / (1.0 - config.likelihood.threshold)
    return None


def surprise(score: Float64Array) -> Float64Array:
    """``score / (1 - score)``: infinite at 1.

    >>> surprise(np.array([0.0, 0.5, 1.0])).tolist()
    [0.0, 1.0, inf]
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        odds: Float64Array = np.where(score >= 1.0, np.inf, score / np.maximum(1.0 - score, 1e-300))
    return odds


@dataclass(frozen=True)
class Applied:
    """A message that changed the state of ``devices`` devices."""

    devices: int
    # An answered alert (false_alarm, confirmed): when its episode began.
    episode_start: int | None = None
    # Whether a candidate scored in shadow flagged that episode too (None: no candidate judges the device).
    candidate_flagged: bool | None = None


@dataclass
class GateCounts:
    """Flags the gate took away, per reason, in one round."""

    suppressed: dict[SuppressionReason, int] = dataclasses.field(default_factory=dict)


class OperatorAdjustments:
    """The ``op_*`` fields of every device, the gate over a round, and feedback application."""

    def __init__(self, table: SlotTable, channels: Sequence[str], config: FeedbackConfig,
                 thresholds: ThresholdsConfig, rules: RuleBook) -> None:
        self.table = table
        self.channels = list(channels)
        self.config = config
        self.warmup = thresholds.warmup
        self.rules = rules
        # The method's own bar of each rule's devices (row 0: no rule); 0 where the method has none.
        bases = np.array([base_surprise(settings) or 0.0 for settings in rules.threshold_settings])
        self.bases = bases[rules.group]
        channel_count = len(self.channels)
        table.add_field("op_flags", (), np.int8, 0)
        table.add_field("op_bar", (channel_count,), np.float64, np.nan)
        table.add_field("op_bar_seen", (), np.int64, 0)
        table.add_field("op_mute_until", (), np.int64, 0)
        table.add_field("op_renew_at", (), np.int64, _NEVER)
        table.add_field("op_renew_seen", (), np.int64, 0)
        table.add_field("op_digests", (DIGESTS_KEPT,), np.int64, 0)
        table.add_field("op_digest_next", (), np.int8, 0)  # ring positions, kept below the ring's size
        table.add_field("op_ep_start", (EPISODES_KEPT,), np.int64, NO_EPISODE)
        table.add_field("op_ep_peak", (EPISODES_KEPT,), np.float32, 0.0)
        table.add_field("op_ep_channel", (EPISODES_KEPT,), np.int16, 0)
        table.add_field("op_ep_verdict", (EPISODES_KEPT,), np.int8, NO_VERDICT)
        table.add_field("op_ep_next", (), np.int8, 0)
        table.add_field("op_ep_open", (), np.int8, NO_EPISODE)

    # ------------------------------------------------------------ hot path
    def flags(self, slots: IndexArray) -> Int64Array:
        """Which adjustments each slot has (0 for most: nothing else is read for them)."""
        flags: Int64Array = self.table["op_flags"][slots]
        return flags

    def due_renewals(self, slots: IndexArray, ts: Int64Array, flags: Int64Array,
                     seen: Int64Array) -> None:
        """Apply pending ``new_normal`` resets whose time has come, before the round is scored."""
        pending = (flags & RENEW_PENDING) != 0
        if not pending.any():
            return
        due = pending & (ts >= self.table["op_renew_at"][slots])
        if due.any():
            self._renew(slots[due], seen[due])
            flags[due] = self.table["op_flags"][slots[due]]

    def gate(self, slots: IndexArray, ts: Int64Array, seen: Int64Array, scored: BoolArray,
             decision: ThresholdResult, flags: Int64Array, counts: GateCounts,
             rule: Int64Array | None = None,
             episode_open: Callable[[IndexArray], BoolArray] | None = None) -> ThresholdResult:
        """The round's decision with each device's adjustments and rules applied.

        ``flags`` from :meth:`flags`; ``rule`` (each row's rule, ``NO_RULE``
        for none) is None when no rule is configured; ``episode_open`` tells
        which devices have an open episode (a bar never takes a flag away
        inside one).
        """
        ruled = rule is not None and bool((rule != NO_RULE).any())
        if not flags.any() and not ruled:
            return decision
        table, book = self.table, self.rules
        anomalous = decision.anomalous.copy()
        sensitivity = book.sensitivity[rule + 1] if rule is not None and book.any_sensitivity else None
        barred = (flags & BARS) != 0
        if sensitivity is not None:
            barred |= sensitivity != 1.0
        if barred.any():
            bar_rows = np.flatnonzero(barred)
            base = self.bases[(rule[bar_rows] if rule is not None else NO_RULE) + 1]
            base = np.broadcast_to(base, bar_rows.shape)
            channel = decision.channel[bar_rows]
            bar = self._bars_now(slots[bar_rows], seen[bar_rows], base)[np.arange(len(bar_rows)), channel]
            if sensitivity is not None:
                bar = bar * sensitivity[bar_rows]
            odds = surprise(decision.score[bar_rows])
            below = anomalous[bar_rows] & (odds < bar)
            if episode_open is not None and below.any():
                # A bar only stops an episode from opening: taking flags away inside an open one
                # would split it, and each part would page (measured: README, Operators in the loop).
                below &= ~episode_open(slots[bar_rows])
            self._count(counts, "feedback", int(np.count_nonzero(below)))
            anomalous[bar_rows[below]] = False
            raised = ~anomalous[bar_rows] & scored[bar_rows] & (base > 0) & (bar < base) & (odds >= bar)
            anomalous[bar_rows[raised]] = True
        # Then what silences a device whatever its bar: a rule's muted channels and maintenance,
        # warming up after a re-baseline, an operator's mute.
        if rule is not None and ruled:
            self._rule_gate(rule, ts, decision, anomalous, counts)
        rows = np.flatnonzero(flags)
        picked, row_flags = slots[rows], flags[rows]
        renewed = (row_flags & RENEWED) != 0
        if renewed.any():
            renewed_rows = rows[renewed]
            since = seen[renewed_rows] - table["op_renew_seen"][picked[renewed]]
            warming = renewed_rows[since < self.warmup]
            self._count(counts, "new_normal", int(np.count_nonzero(anomalous[warming])))
            anomalous[warming] = False
        muted = (row_flags & MUTED) != 0
        if muted.any():
            quiet = rows[muted][ts[rows[muted]] < table["op_mute_until"][picked[muted]]]
            self._count(counts, "mute", int(np.count_nonzero(anomalous[quiet])))
            anomalous[quiet] = False
        return dataclasses.replace(decision, anomalous=anomalous)

    def _rule_gate(self, rule: Int64Array, ts: Int64Array, decision: ThresholdResult, anomalous: BoolArray,
                   counts: GateCounts) -> None:
        """Take away the flags a rule's muted channels or maintenance windows cover."""
        book = self.rules
        if book.any_muted:
            muted = anomalous & book.muted[rule + 1, decision.channel]
            self._count(counts, "muted_channel", int(np.count_nonzero(muted)))
            anomalous[muted] = False
        if book.any_maintenance:
            resting = anomalous & book.in_maintenance(rule, ts)
            self._count(counts, "maintenance", int(np.count_nonzero(resting)))
            anomalous[resting] = False

    @staticmethod
    def _count(counts: GateCounts, reason: SuppressionReason, count: int) -> None:
        if count:
            counts.suppressed[reason] = counts.suppressed.get(reason, 0) + count

    def track(self, slots: IndexArray, decision: ThresholdResult, episode: EpisodeChanges,
              open_now: BoolArray | None) -> None:
        """Keep each episode's start, peak surprise and channel, for the feedback that answers it."""
        if open_now is None:
            return
        table = self.table
        if episode.opened.size:
            rows = episode.opened
            opened = slots[rows]
            index = table["op_ep_next"][opened].astype(np.intp)
            table["op_ep_start"][opened, index] = episode.episode_start[rows]
            table["op_ep_peak"][opened, index] = surprise(decision.score[rows])
            table["op_ep_channel"][opened, index] = decision.channel[rows]
            table["op_ep_verdict"][opened, index] = NO_VERDICT
            table["op_ep_open"][opened] = index
            table["op_ep_next"][opened] = (index + 1) % EPISODES_KEPT
        rows = np.flatnonzero(open_now)
        if rows.size:
            devices = slots[rows]
            index = table["op_ep_open"][devices].astype(np.intp)
            known = index != NO_EPISODE
            rows, devices, index = rows[known], devices[known], index[known]
            odds = surprise(decision.score[rows])
            higher = odds > table["op_ep_peak"][devices, index]
            table["op_ep_peak"][devices[higher], index[higher]] = odds[higher]
            table["op_ep_channel"][devices[higher], index[higher]] = decision.channel[rows[higher]]
        if episode.resolved.size:
            table["op_ep_open"][slots[episode.resolved]] = NO_EPISODE

    # ------------------------------------------------------------ feedback
    def apply(self, message: Feedback, slot: int, device_id: str, model_versions: Sequence[str],
              seen: int, last_ts: int, rule: int = NO_RULE) -> Applied | FeedbackRejection:
        """Apply ``message`` to the device in ``slot`` (``seen`` readings, the last at ``last_ts``).

        ``rule``: the configured rule the device falls under (its method's bar).
        """
        table = self.table
        base = float(self.bases[rule + 1])
        digest = message.digest()
        if digest in table["op_digests"][slot]:
            return FeedbackRejection("duplicate_feedback", "this message was already applied")
        kind = message.kind
        if kind in ("false_alarm", "confirmed"):
            outcome = self._answer(message, slot, device_id, model_versions, seen, base)
        elif kind == "missed":
            outcome = self._missed(message, slot, seen, base)
        elif kind == "new_normal":
            if message.from_ts is None or message.from_ts <= last_ts:
                self._renew(np.array([slot]), np.array([seen]))
            else:
                table["op_renew_at"][slot] = message.from_ts
                table["op_flags"][slot] |= RENEW_PENDING
            outcome = Applied(1)
        elif kind == "mute":
            assert message.until_ts is not None  # noqa: S101  # parse_feedback checked it
            table["op_mute_until"][slot] = message.until_ts
            table["op_flags"][slot] |= MUTED
            outcome = Applied(1)
        else:  # unmute
            table["op_mute_until"][slot] = 0
            table["op_flags"][slot] &= ~MUTED
            outcome = Applied(1)
        if isinstance(outcome, Applied):
            position = int(table["op_digest_next"][slot])
            table["op_digests"][slot, position] = digest
            table["op_digest_next"][slot] = (position + 1) % DIGESTS_KEPT
        return outcome

    def _answer(self, message: Feedback, slot: int, device_id: str, model_versions: Sequence[str],
                seen: int, base: float) -> Applied | FeedbackRejection:
        table = self.table
        starts = table["op_ep_start"][slot]
        # The alert may have been raised by a model swapped out since (its id names that model).
        index = next((k for k in range(EPISODES_KEPT) for version in model_versions
                      if starts[k] != NO_EPISODE
                      and alert_id(device_id, int(starts[k]), version) == message.alert_id), None)
        if index is None:
            return FeedbackRejection("unknown_alert", f"no recent episode of {device_id} has this alert_id")
        if table["op_ep_verdict"][slot, index] != NO_VERDICT:
            return FeedbackRejection("duplicate_feedback", "this alert was already answered")
        start = int(starts[index])
        if message.kind == "confirmed":
            table["op_ep_verdict"][slot, index] = CONFIRMED
            return Applied(1, episode_start=start)
        table["op_ep_verdict"][slot, index] = FALSE_ALARM
        bars = self._bars_now(np.array([slot]), np.array([seen]), np.array([base]))[0]
        channel = int(table["op_ep_channel"][slot, index])
        wanted = float(table["op_ep_peak"][slot, index]) * (1.0 + self.config.margin)
        ceiling = base * self.config.max_factor if base > 0 else wanted
        bars[channel] = min(max(bars[channel], wanted), ceiling)
        self._set_bars(slot, bars, seen)
        return Applied(1, episode_start=start)

    def _missed(self, message: Feedback, slot: int, seen: int, base: float) -> Applied | FeedbackRejection:
        if message.channel is not None and message.channel not in self.channels:
            return FeedbackRejection("invalid_feedback",
                                     f"channel {message.channel[:64]!r} is not in readings.channels")
        bars = self._bars_now(np.array([slot]), np.array([seen]), np.array([base]))[0]
        chosen = [self.channels.index(message.channel)] if message.channel is not None else slice(None)
        if base > 0:
            lowered = np.minimum(bars[chosen], base) - self.config.missed_step * base
            bars[chosen] = np.maximum(lowered, self.config.min_factor * base)
        else:
            bars[chosen] = base
        self._set_bars(slot, bars, seen)
        return Applied(1)

    def _bars_now(self, slots: IndexArray, seen: Int64Array, base: Float64Array) -> Float64Array:
        """``(len(slots), channels)``: each bar decayed to now (its ``base`` where none is set)."""
        table = self.table
        bar0 = table["op_bar"][slots]
        age = (seen - table["op_bar_seen"][slots]).astype(np.float64)
        decay = np.exp2(-np.maximum(age, 0.0) / self.config.half_life_readings)[:, None]
        base = base[:, None]
        bars: Float64Array = np.where(np.isnan(bar0), base, base + (bar0 - base) * decay)
        return bars

    def _set_bars(self, slot: int, bars: Float64Array, seen: int) -> None:
        table = self.table
        table["op_bar"][slot] = bars
        table["op_bar_seen"][slot] = seen
        table["op_flags"][slot] |= BARS

    def _renew(self, slots: IndexArray, seen: Int64Array) -> None:
        """Forget what the devices learned (see the module docstring); they warm up again."""
        table = self.table
        names = [name for name in table.fields
                 if name not in _KEPT_FIELDS and not name.startswith(_KEPT_PREFIXES)]
        table.reset_fields(slots, names)
        table["op_bar"][slots] = np.nan
        table["op_renew_seen"][slots] = seen
        table["op_renew_at"][slots] = _NEVER
        flags = table["op_flags"][slots]
        table["op_flags"][slots] = (flags & ~(BARS | RENEW_PENDING)) | RENEWED

    def verdicts(self, slot: int) -> list[tuple[int, int]]:
        """``(episode start, verdict)`` of the device's kept episodes, oldest first."""
        table = self.table
        order = [(int(table["op_ep_next"][slot]) + k) % EPISODES_KEPT for k in range(EPISODES_KEPT)]
        return [(int(table["op_ep_start"][slot, k]), int(table["op_ep_verdict"][slot, k]))
                for k in order if table["op_ep_start"][slot, k] != NO_EPISODE]
