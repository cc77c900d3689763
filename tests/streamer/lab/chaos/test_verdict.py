"""The chaos verdict on synthetic evidence: LESS, MORE, ALL-DELIVERED and the counts."""

from __future__ import annotations

from typing import Any

import msgspec

from streamer.codec import Alert, Driver
from streamer.lab.chaos.verdict import (
    DeadLetterSeen,
    Evidence,
    ProducedRecord,
    Reference,
    alerted_anomalies,
    judge,
    same_content,
)
from streamer.simulate import InjectedAnomaly

GRACE_MS = 1000
TRUTH = [InjectedAnomaly("dev-a", "spike", 10_000, 10_000, 9.0),
         InjectedAnomaly("dev-b", "level_shift", 20_000, 25_000, 8.0)]


def alert(device: str, event: str, ts: int, start: int | None = None, **figures: float) -> Alert:
    values: dict[str, Any] = {"actual": 9.0, "forecast": 1.0, "residual": 8.0, "smoothed_residual": 6.0,
                              "threshold": 5.0, "score": 0.99, "processing_ms": 2.0, "latency_ms": 3.0}
    values.update(figures)
    return Alert(alert_id=f"{device}@{start or ts}", event=event,  # type: ignore[arg-type]
                 device_id=device, ts=ts, episode_start_ts=start or ts, channel="value", method="zscore",
                 model_version="v1", **values)


REFERENCE_ALERTS = [alert("dev-a", "open", 10_000), alert("dev-a", "resolve", 12_000, 10_000),
                    alert("dev-b", "open", 20_400)]
# Partition 0: offsets 0..4, the hostile record at 2; partition 1: offsets 0..2.
PRODUCED = [ProducedRecord(0, 0), ProducedRecord(0, 1), ProducedRecord(0, 2, "malformed_json"),
            ProducedRecord(0, 3), ProducedRecord(0, 4), ProducedRecord(1, 0), ProducedRecord(1, 1),
            ProducedRecord(1, 2)]


def reference() -> Reference:
    return Reference(alerts=list(REFERENCE_ALERTS), rejected={(0, 2): "malformed_json"})


def evidence(**changes: Any) -> Evidence:
    fields: dict[str, Any] = {
        "produced": PRODUCED,
        "committed": {0: 5, 1: 3},
        "dead_letters": [DeadLetterSeen(0, 2, "malformed_json")],
        "alerts": list(REFERENCE_ALERTS),
        "replay_causes": {"sigkill": 0, "unclean_exit": 0, "replay_event": 0},
    }
    fields.update(changes)
    return Evidence(**fields)


def verdict_of(ev: Evidence, ref: Reference | None = None) -> dict[str, Any]:
    return judge(ev, ref or reference(), TRUTH, GRACE_MS).as_json()


# --------------------------------------------------------------- delivered
def test_everything_processed_and_alerted_once_is_all_delivered() -> None:
    result = verdict_of(evidence())
    assert result["verdict"] == "ALL-DELIVERED"
    assert result["reasons"] == []
    assert (result["readings"], result["readings_accounted"], result["hostile_records"]) == (8, 8, 1)
    assert (result["injected_anomalies"], result["alerted_anomalies"]) == (2, 2)
    assert result["duplicate_alerts"] == 0


def test_repeats_after_a_kill_are_delivered_at_least_once_and_counted() -> None:
    repeats = [*REFERENCE_ALERTS, alert("dev-a", "open", 10_000, processing_ms=40.0, forecast=1.0 + 1e-9),
               alert("dev-b", "open", 20_400)]
    result = verdict_of(evidence(alerts=repeats, dead_letters=[DeadLetterSeen(0, 2, "malformed_json")] * 2,
                                 replay_causes={"sigkill": 1}))
    assert result["verdict"] == "ALL-DELIVERED"
    assert result["duplicate_alerts"] == 2
    assert result["max_copies"] == 2
    assert result["readings_accounted"] == 8


# -------------------------------------------------------------------- LESS
def test_a_record_beyond_the_committed_offset_is_less() -> None:
    result = verdict_of(evidence(committed={0: 4, 1: 3}))
    assert result["verdict"] == "LESS"
    assert result["readings_uncommitted"] == 1
    assert result["readings_accounted"] == 7


def test_a_partition_never_committed_is_less() -> None:
    result = verdict_of(evidence(committed={0: 5, 1: None}))
    assert result["verdict"] == "LESS"
    assert result["readings_uncommitted"] == 3


def test_a_hostile_record_missing_from_the_dead_letter_topic_is_less() -> None:
    result = verdict_of(evidence(dead_letters=[]))
    assert result["verdict"] == "LESS"
    assert result["hostile_missing_from_dlq"] == 1
    assert result["readings_accounted"] == 7


def test_a_record_only_the_reference_rejects_must_be_dead_lettered_too() -> None:
    ref = reference()
    ref.rejected[(1, 1)] = "duplicate_timestamp"
    result = verdict_of(evidence(), ref)
    assert result["verdict"] == "LESS"
    assert (result["rejections_missing_from_dlq"], result["hostile_missing_from_dlq"]) == (1, 0)


def test_a_valid_reading_dead_lettered_instead_of_scored_is_less() -> None:
    letters = [DeadLetterSeen(0, 2, "malformed_json"), DeadLetterSeen(1, 0, "out_of_order")]
    result = verdict_of(evidence(dead_letters=letters))
    assert result["verdict"] == "LESS"
    assert result["valid_readings_dead_lettered"] == 1


def test_an_alert_of_the_reference_never_published_is_less_and_its_anomaly_lost() -> None:
    result = verdict_of(evidence(alerts=REFERENCE_ALERTS[:2]))
    assert result["verdict"] == "LESS"
    assert result["alerts_missing"] == 1
    assert (result["reference_alerted_anomalies"], result["alerted_anomalies"]) == (2, 1)
    assert result["anomalies_lost"] == 1


def test_less_wins_over_more() -> None:
    result = verdict_of(evidence(committed={0: 5, 1: 2}, alerts=[*REFERENCE_ALERTS, REFERENCE_ALERTS[0]]))
    assert result["verdict"] == "LESS"
    assert len(result["reasons"]) == 2


# -------------------------------------------------------------------- MORE
def test_a_duplicate_without_any_replay_cause_is_more() -> None:
    result = verdict_of(evidence(alerts=[*REFERENCE_ALERTS, REFERENCE_ALERTS[1]]))
    assert result["verdict"] == "MORE"
    assert result["duplicate_alerts"] == 1


def test_more_copies_than_replays_explain_are_more() -> None:
    copies = [*REFERENCE_ALERTS, *[REFERENCE_ALERTS[0]] * 3]
    assert verdict_of(evidence(alerts=copies, replay_causes={"sigkill": 2}))["verdict"] == "MORE"
    assert verdict_of(evidence(alerts=copies, replay_causes={"sigkill": 2, "replay_event": 1}))[
        "verdict"] == "ALL-DELIVERED"


def test_an_alert_the_reference_does_not_publish_is_more() -> None:
    extra = alert("dev-c", "open", 30_000)
    result = verdict_of(evidence(alerts=[*REFERENCE_ALERTS, extra], replay_causes={"sigkill": 3}))
    assert result["verdict"] == "MORE"
    assert result["alerts_extra"] == 1


def test_copies_of_one_id_that_disagree_are_more() -> None:
    other = msgspec.structs.replace(REFERENCE_ALERTS[0], threshold=7.5)
    result = verdict_of(evidence(alerts=[*REFERENCE_ALERTS, other], replay_causes={"sigkill": 1}))
    assert result["verdict"] == "MORE"
    assert result["conflicting_duplicates"] == 1


def test_figures_off_the_reference_are_reported_without_failing() -> None:
    shifted = [msgspec.structs.replace(REFERENCE_ALERTS[0], score=0.5), *REFERENCE_ALERTS[1:]]
    result = verdict_of(evidence(alerts=shifted))
    assert result["verdict"] == "ALL-DELIVERED"
    assert result["alerts_content_diverged"] == 1


def test_a_hostile_record_rejected_for_another_reason_is_reported_without_failing() -> None:
    result = verdict_of(evidence(dead_letters=[DeadLetterSeen(0, 2, "wrong_type")]))
    assert result["verdict"] == "ALL-DELIVERED"
    assert result["hostile_reason_mismatches"] == 1


# -------------------------------------------------------------- detection
def test_an_anomaly_counts_as_alerted_only_for_an_open_of_its_device_within_its_window() -> None:
    assert alerted_anomalies(TRUTH, [alert("dev-b", "open", 25_000 + GRACE_MS)], GRACE_MS) == {1}
    assert alerted_anomalies(TRUTH, [alert("dev-b", "open", 25_001 + GRACE_MS)], GRACE_MS) == set()
    assert alerted_anomalies(TRUTH, [alert("dev-b", "resolve", 21_000)], GRACE_MS) == set()
    assert alerted_anomalies(TRUTH, [alert("dev-a", "open", 21_000)], GRACE_MS) == set()


def test_drivers_agree_up_to_float_rounding_and_in_any_order_of_near_ties() -> None:
    def driver(channel: str, share: float, actual: float = 9.0) -> Driver:
        return Driver(channel=channel, actual=actual, forecast=1.0, residual=actual - 1.0, score=0.9,
                      share=share)

    base = msgspec.structs.replace(alert("dev-a", "open", 10_000),
                                   drivers=(driver("a", 0.5), driver("b", 0.5)))
    rounded = msgspec.structs.replace(base, drivers=(driver("b", 0.5 + 1e-9), driver("a", 0.5 - 1e-9)))
    assert same_content(base, rounded)
    other_figure = msgspec.structs.replace(base, drivers=(driver("a", 0.5, actual=9.5), driver("b", 0.5)))
    assert not same_content(base, other_figure)
    other_channel = msgspec.structs.replace(base, drivers=(driver("a", 0.5), driver("c", 0.5)))
    assert not same_content(base, other_channel)


# ------------------------------------------------------------- model swaps
VERSIONS = frozenset({"v1", "v2"})


def by_version(source: Alert, version: str, **figures: float) -> Alert:
    """``source`` as the model ``version`` publishes it: the version is part of the alert id."""
    return msgspec.structs.replace(source, alert_id=f"{source.alert_id}/{version}", model_version=version,
                                   **figures)


def swapped(alerts: list[Alert], from_ts: int) -> dict[str, Any]:
    return verdict_of(evidence(alerts=alerts, swaps_from_ts=from_ts, model_versions=VERSIONS))


def test_after_a_swap_alerts_match_the_reference_by_episode_and_differences_are_counted() -> None:
    # dev-b's open came from the swapped-in model (other id, other figures); it also raised an update
    # the single-model reference does not have.
    alerts = [*REFERENCE_ALERTS[:2], by_version(REFERENCE_ALERTS[2], "v2", score=0.7),
              by_version(alert("dev-b", "update", 22_000, 20_400), "v2")]
    result = swapped(alerts, from_ts=15_000)
    assert result["verdict"] == "ALL-DELIVERED", result["reasons"]
    assert (result["alerts_missing"], result["alerts_extra"]) == (0, 0)
    assert (result["alerts_missing_after_first_swap"], result["alerts_extra_after_first_swap"]) == (0, 1)
    assert result["alerts_content_diverged"] == 1
    assert result["alert_model_versions"] == {"v1": 2, "v2": 2}
    # Without swaps the same topic is judged by id: the reference's dev-b open was never published.
    assert verdict_of(evidence(alerts=alerts))["verdict"] == "LESS"


def test_before_the_first_swap_every_rule_still_holds() -> None:
    # dev-a's resolve (12,000) comes after the swap and may be missing; its open (10,000) may not.
    assert swapped([*REFERENCE_ALERTS[:1], REFERENCE_ALERTS[2]], from_ts=11_000)["verdict"] == "ALL-DELIVERED"
    result = swapped(list(REFERENCE_ALERTS[1:]), from_ts=11_000)
    assert result["verdict"] == "LESS"
    assert result["alerts_missing"] == 1


def test_after_a_swap_an_anomaly_without_an_alert_is_less() -> None:
    result = swapped(list(REFERENCE_ALERTS[:2]), from_ts=15_000)
    assert (result["alerts_missing"], result["alerts_missing_after_first_swap"]) == (0, 1)
    assert result["verdict"] == "LESS"
    assert result["anomalies_lost"] == 1
    assert "anomalies" in result["reasons"][0]


def test_an_alert_of_a_version_the_registry_never_held_is_more() -> None:
    alerts = [*REFERENCE_ALERTS[:2], by_version(REFERENCE_ALERTS[2], "v9")]
    result = swapped(alerts, from_ts=15_000)
    assert result["verdict"] == "MORE"
    assert result["alerts_of_unknown_versions"] == 1
