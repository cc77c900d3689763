from __future__ import annotations

import pytest

from streamer.alertmanager.payload import AlertStyle, rfc3339, to_alertmanager
from tests.fakes import START_MS
from tests.streamer.alertmanager.builders import event_of

NOW = START_MS + 60_000
STYLE = AlertStyle(dashboard_url="https://grafana/d/dev?var-device={device}&var-channel={channel}")


def test_a_firing_episode_carries_its_labels_annotations_and_an_end_ahead() -> None:
    first = event_of("ep-1", "open", score=0.995)
    payload = to_alertmanager(first, first, STYLE, now_ms=NOW, firing_for_ms=240_000)
    assert payload["labels"] == {"alertname": "StreamerAnomaly", "alert_id": "ep-1", "device": "pump-1",
                                 "channel": "value", "severity": "critical", "model_version": "lstm-abc"}
    notes = payload["annotations"]
    assert notes["dedup_key"] == "ep-1"
    assert notes["feedback"] == "streamer feedback false-alarm --device pump-1 --alert-id ep-1"
    assert (notes["actual"], notes["forecast"], notes["residual"]) == ("18.98", "9.16", "9.82")
    assert (notes["score"], notes["threshold"], notes["method"]) == ("0.995", "3.99", "zscore")
    assert notes["dashboard"] == "https://grafana/d/dev?var-device=pump-1&var-channel=value"
    assert payload["generatorURL"] == notes["dashboard"]
    assert "drivers" not in notes
    assert payload["startsAt"] == rfc3339(START_MS) == "2023-11-14T22:13:20.000Z"
    assert payload["endsAt"] == rfc3339(NOW + 240_000)


def test_no_dashboard_template_means_no_link() -> None:
    first = event_of()
    payload = to_alertmanager(first, first, AlertStyle(), now_ms=NOW, firing_for_ms=1000)
    assert "generatorURL" not in payload
    assert "dashboard" not in payload["annotations"]


@pytest.mark.parametrize(("score", "severity"), [(1.0, "critical"), (0.99, "critical"), (0.9899, "warning"),
                                                 (0.935, "warning"), (0.9, "warning"), (0.5, "info")])
def test_severity_bands(score: float, severity: str) -> None:
    first = event_of(score=score)
    payload = to_alertmanager(first, first, AlertStyle(), now_ms=NOW, firing_for_ms=1)
    assert payload["labels"]["severity"] == severity


def test_severity_bands_are_configurable() -> None:
    style = AlertStyle(severity_critical=0.9, severity_warning=0.5)
    assert [style.severity(s) for s in (0.95, 0.6, 0.4)] == ["critical", "warning", "info"]


def test_an_update_keeps_the_episode_s_labels_and_refreshes_its_annotations() -> None:
    first = event_of("ep-1", "open", score=0.95, channel="temp")
    update = event_of("ep-1", "update", score=0.999, channel="vibration", ts=START_MS + 5000)
    payload = to_alertmanager(first, update, AlertStyle(), now_ms=NOW, firing_for_ms=1000)
    assert payload["labels"]["severity"] == "warning"  # the alert's identity never changes
    assert payload["labels"]["channel"] == "temp"
    assert payload["annotations"]["score"] == "0.999"
    assert payload["annotations"]["event"] == "update"


def test_a_resolve_has_the_same_labels_and_ends_at_its_event_time() -> None:
    first = event_of("ep-1", "open")
    resolve = event_of("ep-1", "resolve", ts=START_MS + 30_000, score=0.1, channel="other")
    firing = to_alertmanager(first, first, AlertStyle(), now_ms=NOW, firing_for_ms=1000)
    resolved = to_alertmanager(first, resolve, AlertStyle(), now_ms=NOW, firing_for_ms=1000)
    assert resolved["labels"] == firing["labels"]
    assert resolved["endsAt"] == rfc3339(START_MS + 30_000)
    assert resolved["startsAt"] == firing["startsAt"]


def test_a_resolve_never_ends_in_the_future_nor_before_its_start() -> None:
    first = event_of("ep-1", "open")
    ahead = event_of("ep-1", "resolve", ts=NOW + 3_600_000)
    assert to_alertmanager(first, ahead, AlertStyle(), now_ms=NOW, firing_for_ms=1)["endsAt"] == rfc3339(NOW)
    before = event_of("ep-1", "resolve", ts=START_MS - 10)
    payload = to_alertmanager(first, before, AlertStyle(), now_ms=NOW, firing_for_ms=1)
    assert payload["endsAt"] == payload["startsAt"]


def test_drivers_are_summarised_when_present() -> None:
    first = event_of(drivers=[{"channel": "temp", "share": 0.2}, {"channel": "vibration", "share": 0.8,
                                                                   "actual": 3.5, "forecast": 1.0}])
    notes = to_alertmanager(first, first, AlertStyle(), now_ms=NOW, firing_for_ms=1)["annotations"]
    assert notes["drivers"] == "vibration 80% (actual 3.5, forecast 1); temp 20%"


def test_a_missing_threshold_is_an_empty_annotation() -> None:
    first = event_of(threshold=None)
    payload = to_alertmanager(first, first, AlertStyle(), now_ms=NOW, firing_for_ms=1)
    assert payload["annotations"]["threshold"] == ""
