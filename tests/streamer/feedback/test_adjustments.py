"""Operator feedback changes the next decisions of the device it names, and no other (pipeline)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest

from streamer.alerts.episodes import EpisodeChanges, alert_id
from streamer.codec import Alert, ReadingBatch
from streamer.config import FeedbackConfig, RecordGateConfig, ThresholdsConfig
from streamer.feedback.adjustments import Applied, GateCounts, OperatorAdjustments
from streamer.feedback.messages import Feedback, FeedbackRejection, new_feedback
from streamer.feedback.rules import RuleBook
from streamer.scoring.pipeline import ScoreResult, ScoringPipeline
from streamer.state.slot_table import SlotTable
from streamer.thresholds.result import ThresholdResult
from tests.fakes import offline_config

DEVICES = ("a", "b")
STEP_MS = 1000


def _batch(t: int, values: Iterable[float]) -> ReadingBatch:
    row = np.array(list(values), dtype=np.float64)
    return ReadingBatch(device_ids=list(DEVICES), ts_ms=np.full(len(DEVICES), t * STEP_MS, np.int64),
                        values=row.reshape(-1, 1), fetched_at=np.zeros(len(DEVICES)),
                        record_index=np.arange(len(DEVICES)))


class Fleet:
    """Two devices with the same quiet signal; spikes of a chosen size at chosen readings."""

    def __init__(self, resolve_after: int = 100, **feedback: object) -> None:
        # No record gate: a flag then stands on its own size, which is what feedback changes.
        thresholds = {"record_gate": RecordGateConfig(enabled=False)}
        self.pipeline = ScoringPipeline(offline_config(thresholds=thresholds, feedback=feedback,
                                                       alerts={"resolve_after": resolve_after}))
        self.t = 0
        self.rng = np.random.default_rng(3)

    def run(self, readings: int, spikes: dict[int, float] | None = None) -> tuple[list[Alert], ScoreResult]:
        """Score ``readings`` more rounds; ``spikes`` maps a reading (from now) to a jump on both devices."""
        alerts: list[Alert] = []
        total = ScoreResult()
        for k in range(readings):
            self.t += 1
            base = np.sin(self.t / 10.0) + self.rng.normal(0.0, 0.05, len(DEVICES))
            result = self.pipeline.score(_batch(self.t, base + (spikes or {}).get(k, 0.0)))
            alerts += result.alerts
            for reason, count in result.suppressed.items():
                total.suppressed[reason] = total.suppressed.get(reason, 0) + count
        return alerts, total

    def apply(self, kind: str, **fields: object) -> Applied | FeedbackRejection:
        return self.pipeline.apply_feedback(new_feedback(kind, **fields))  # type: ignore[arg-type]


def _opens(alerts: list[Alert], device: str) -> list[Alert]:
    return [alert for alert in alerts if alert.event == "open" and alert.device_id == device]


@pytest.fixture
def fleet() -> Fleet:
    fleet = Fleet(margin=1.0)  # the noise moves a same-size spike's surprise by tens of per cent
    fleet.run(300)
    return fleet


def test_a_false_alarm_silences_flags_of_its_size_on_that_device_only(fleet: Fleet) -> None:
    alerts, _ = fleet.run(200, {50: 1.5})
    (first,) = _opens(alerts, "a")
    answered = fleet.apply("false_alarm", device_id="a", alert_id=first.alert_id)
    assert answered == Applied(1, episode_start=first.episode_start_ts)
    alerts, totals = fleet.run(200, {50: 1.5})
    assert _opens(alerts, "a") == []
    assert len(_opens(alerts, "b")) == 1
    assert totals.suppressed["feedback"] >= 1


def test_a_false_alarm_leaves_larger_anomalies_alerting(fleet: Fleet) -> None:
    alerts, _ = fleet.run(200, {50: 1.5})
    (first,) = _opens(alerts, "a")
    fleet.apply("false_alarm", device_id="a", alert_id=first.alert_id)
    alerts, _ = fleet.run(200, {50: 8.0})  # far beyond the bar's ceiling (max_factor)
    assert len(_opens(alerts, "a")) == 1


def test_a_false_alarms_bar_takes_no_flag_inside_an_open_episode() -> None:
    thresholds = ThresholdsConfig()
    table = SlotTable(4)
    adjustments = OperatorAdjustments(table, ["value"], FeedbackConfig(margin=1.0), thresholds,
                                      RuleBook([], ["value"], thresholds))
    slots = np.array([0, 1])
    flagged = ThresholdResult(score=np.array([0.95, 0.95]), anomalous=np.array([True, True]),
                              channel=np.zeros(2, np.intp), smoothed=np.ones(2), threshold=np.ones(2),
                              channel_scores=np.full((2, 1), 0.95))
    # An episode opened on both devices at this size; both are answered as false alarms.
    none = np.array([], np.intp)
    opened = EpisodeChanges(opened=np.array([0, 1]), updated=none, resolved=none,
                            episode_start=np.array([1_000, 1_000]), open_now=np.array([True, True]))
    adjustments.track(slots, flagged, opened, opened.open_now)
    for slot, device in enumerate(("a", "b")):
        message = new_feedback("false_alarm", device_id=device, alert_id=alert_id(device, 1_000, "v1"))
        # Raised by v1, answered after v2 replaced it: still the device's episode.
        assert adjustments.apply(message, slot, device, ["v2", "v1"], seen=10, last_ts=1_000) == Applied(
            1, episode_start=1_000)
    # The same size again: it stands on "a", whose episode is still open, and opens nothing on "b".
    gated = adjustments.gate(slots, np.array([2_000, 2_000]), np.array([11, 11]), np.array([True, True]),
                             flagged, adjustments.flags(slots), GateCounts(),
                             episode_open=lambda s: s == 0)
    assert gated.anomalous.tolist() == [True, False]


def test_a_false_alarm_decays_back() -> None:
    fleet = Fleet(margin=1.0, half_life_readings=500)
    fleet.run(300)
    alerts, _ = fleet.run(200, {50: 1.5})
    (first,) = _opens(alerts, "a")
    fleet.apply("false_alarm", device_id="a", alert_id=first.alert_id)
    alerts, _ = fleet.run(200, {10: 1.5})
    assert _opens(alerts, "a") == []
    fleet.run(5_000)  # ten half-lives
    alerts, _ = fleet.run(200, {50: 1.5})
    assert len(_opens(alerts, "a")) == 1


def test_a_missed_anomaly_makes_the_device_more_sensitive() -> None:
    fleet = Fleet(min_factor=0.25)
    fleet.run(300)
    bump = 0.6  # a surprise of about 6 against the method's 14.4 (z = 5): never flagged
    alerts, _ = fleet.run(200, {50: bump})
    assert _opens(alerts, "a") == []
    start = (fleet.t - 150) * STEP_MS
    for _ in range(3):  # each report lowers the bar by a quarter of the method's, to a quarter of it
        fleet.apply("missed", device_id="a", start_ts=start, end_ts=start + STEP_MS)
    alerts, _ = fleet.run(200, {50: bump})
    assert len(_opens(alerts, "a")) == 1
    assert _opens(alerts, "b") == []


def test_a_mute_suppresses_alerts_until_its_time_and_unmute_ends_it(fleet: Fleet) -> None:
    until = (fleet.t + 150) * STEP_MS
    assert fleet.apply("mute", device_id="a", until_ts=until, reason="maintenance") == Applied(1)
    alerts, totals = fleet.run(200, {50: 3.0})
    assert _opens(alerts, "a") == []
    assert len(_opens(alerts, "b")) == 1
    assert totals.suppressed["mute"] >= 1
    alerts, _ = fleet.run(200, {50: 3.0})  # the mute has ended
    assert len(_opens(alerts, "a")) == 1
    fleet.apply("mute", device_id="a", until_ts=(fleet.t + 10_000) * STEP_MS)
    fleet.apply("unmute", device_id="a")
    alerts, _ = fleet.run(200, {50: 3.0})
    assert len(_opens(alerts, "a")) == 1


def test_a_pattern_mute_applies_to_every_matching_device(fleet: Fleet) -> None:
    outcome = fleet.pipeline.apply_feedback(Feedback(kind="mute", device_pattern="[ab]", until_ts=10**13))
    assert outcome == Applied(2)
    alerts, _ = fleet.run(200, {50: 3.0})
    assert alerts == []
    assert fleet.pipeline.apply_feedback(Feedback(kind="unmute", device_pattern="z*")) == Applied(0)


def test_new_normal_re_baselines_the_device_after_a_level_shift(fleet: Fleet) -> None:
    shift = {k: 5.0 for k in range(2_000)}
    alerts, _ = fleet.run(150, shift)
    assert len(_opens(alerts, "a")) == 1
    fleet.apply("new_normal", device_id="a")
    alerts, totals = fleet.run(400, shift)
    # The shifted level is normal for "a" from now on; "b" keeps judging it against the old one.
    assert [alert.event for alert in alerts if alert.device_id == "a"] in ([], ["resolve"])
    assert totals.suppressed.get("new_normal", 0) >= 0
    alerts, _ = fleet.run(200, {k: 5.0 + (3.0 if k == 50 else 0.0) for k in range(200)})
    assert len(_opens(alerts, "a")) == 1  # and it still alerts on what is abnormal for the new level


def test_new_normal_from_a_later_time_waits_for_it(fleet: Fleet) -> None:
    fleet.apply("new_normal", device_id="a", from_ts=(fleet.t + 100) * STEP_MS)
    alerts, _ = fleet.run(90, {50: 3.0})  # before from_ts: still the old baseline
    assert len(_opens(alerts, "a")) == 1


def test_the_same_message_twice_changes_nothing_more(fleet: Fleet) -> None:
    alerts, _ = fleet.run(200, {50: 1.5})
    (first,) = _opens(alerts, "a")
    message = new_feedback("mute", device_id="a", until_ts=1)
    assert fleet.pipeline.apply_feedback(message) == Applied(1)
    again = fleet.pipeline.apply_feedback(message)
    assert isinstance(again, FeedbackRejection) and again.reason == "duplicate_feedback"
    answered = fleet.apply("false_alarm", device_id="a", alert_id=first.alert_id)
    assert answered == Applied(1, episode_start=first.episode_start_ts)
    twice = fleet.apply("confirmed", device_id="a", alert_id=first.alert_id)
    assert isinstance(twice, FeedbackRejection) and twice.reason == "duplicate_feedback"


def test_feedback_for_an_unknown_device_or_alert_is_rejected(fleet: Fleet) -> None:
    unknown_device = fleet.apply("mute", device_id="nobody", until_ts=1)
    assert isinstance(unknown_device, FeedbackRejection) and unknown_device.reason == "unknown_device"
    unknown_alert = fleet.apply("false_alarm", device_id="a", alert_id="55ee746e-bf48-57ad-90b6-4e27698229ad")
    assert isinstance(unknown_alert, FeedbackRejection) and unknown_alert.reason == "unknown_alert"
    other_partition = fleet.pipeline.apply_feedback(new_feedback("unmute", device_id="a"), frozenset({5}))
    assert isinstance(other_partition, FeedbackRejection) and other_partition.reason == "unknown_device"
    bad_channel = fleet.apply("missed", device_id="a", start_ts=1, end_ts=2, channel="nope")
    assert isinstance(bad_channel, FeedbackRejection) and bad_channel.reason == "invalid_feedback"
