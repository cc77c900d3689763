"""Promotion after shadow: alert rate, operator precision and confirmed anomalies decide."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from streamer.lifecycle.exclusions import Episode
from streamer.lifecycle.promotion import MS_PER_HOUR, decide, epoch_ms, evidence, shadow_since_ms

HOUR = MS_PER_HOUR


def ep(alert_id: str, device: str, start_h: float, end_h: float, version: str = "cur") -> Episode:
    return Episode(alert_id, device, round(start_h * HOUR), round(end_h * HOUR), version)


def test_rates_cover_only_episodes_opened_in_the_shadow_period() -> None:
    current = [ep("old", "d", 0.5, 0.6), ep("a", "d", 2, 2.1), ep("b", "e", 3, 3.1)]
    candidate = [ep("x", "d", 2.05, 2.2, "cand")]
    found = evidence(current, candidate, {}, since_ms=HOUR, now_ms=5 * HOUR)
    assert (found.hours, found.current_episodes, found.candidate_episodes) == (4.0, 2, 1)
    assert found.current_per_hour == 0.5 and found.candidate_per_hour == 0.25


def test_a_partial_shadow_is_scaled_to_the_whole_fleet() -> None:
    found = evidence([], [ep("x", "d", 1, 1.1, "cand")], {}, since_ms=0, now_ms=2 * HOUR,
                     shadow_fraction=0.25)
    assert found.candidate_per_hour == pytest.approx(2.0)


def test_candidate_episodes_inherit_the_verdicts_of_the_episodes_they_overlap() -> None:
    current = [ep("real", "d", 1, 1.2), ep("noise", "d", 2, 2.1), ep("noise2", "e", 2, 2.1)]
    verdict = {"real": "confirmed", "noise": "false_alarm", "noise2": "false_alarm"}
    # The candidate catches the real one, stays quiet on one false alarm, repeats the other,
    # and raises one episode nobody judged.
    candidate = [ep("c1", "d", 1.1, 1.3, "cand"), ep("c2", "e", 2.05, 2.2, "cand"),
                 ep("c3", "f", 3, 3.1, "cand")]
    found = evidence(current, candidate, verdict, since_ms=0, now_ms=4 * HOUR)  # type: ignore[arg-type]
    assert found.current_precision == pytest.approx(1 / 3)
    assert found.candidate_precision == pytest.approx(1 / 2)
    assert (found.confirmed, found.confirmed_caught) == (1, 1)
    assert decide(found, max_alert_increase=0.1).promote


def test_more_alerts_than_the_allowed_increase_refuse_promotion() -> None:
    current = [ep(f"a{i}", "d", i, i + 0.1) for i in range(10)]
    candidate = [ep(f"c{i}", "e", i, i + 0.1, "cand") for i in range(12)]
    found = evidence(current, candidate, {}, since_ms=0, now_ms=12 * HOUR)
    assert not decide(found, max_alert_increase=0.1).promote
    assert "shadow alerts/h" in decide(found, max_alert_increase=0.1).reason
    assert decide(found, max_alert_increase=0.25).promote


def test_lower_precision_refuses_promotion() -> None:
    current = [ep("t", "d", 1, 1.1), ep("f", "e", 2, 2.1)]
    verdict = {"t": "confirmed", "f": "false_alarm"}
    candidate = [ep("c1", "d", 1, 1.1, "cand"), ep("c2", "e", 2, 2.1, "cand"),
                 ep("c3", "e", 2.05, 2.2, "cand")]
    found = evidence(current, candidate, verdict, since_ms=0, now_ms=3 * HOUR)  # type: ignore[arg-type]
    assert found.candidate_precision == pytest.approx(1 / 3) and found.current_precision == 0.5
    decision = decide(found, max_alert_increase=1.0)
    assert not decision.promote and "precision" in decision.reason


def test_a_candidate_that_misses_a_confirmed_anomaly_is_not_promoted() -> None:
    current = [ep("t", "d", 1, 1.1)]
    found = evidence(current, [], {"t": "confirmed"}, since_ms=0, now_ms=2 * HOUR)
    decision = decide(found, max_alert_increase=0.1)
    assert not decision.promote and "confirmed" in decision.reason
    # Scoring a share of the devices, it may not have seen that device: the check is skipped.
    partial = evidence(current, [], {"t": "confirmed"}, since_ms=0, now_ms=2 * HOUR, shadow_fraction=0.5)
    assert decide(partial, max_alert_increase=0.1).promote


def test_shadow_start_is_the_latest_time_it_became_candidate() -> None:
    history = [SimpleNamespace(action="shadow", version="v1", at="2026-01-01T00:00:00Z"),
               SimpleNamespace(action="shadow", version="v2", at="2026-01-02T00:00:00Z"),
               SimpleNamespace(action="shadow", version="v1", at="2026-01-03T00:00:00Z")]
    assert shadow_since_ms(history, "v1") == epoch_ms("2026-01-03T00:00:00Z")
    assert shadow_since_ms(history, "v2") - epoch_ms("2026-01-01T00:00:00Z") == 24 * HOUR  # type: ignore[operator]
    assert shadow_since_ms(history, "v3") is None
