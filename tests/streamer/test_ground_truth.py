from streamer.codec import Alert
from streamer.ground_truth import DetectionReport, match
from streamer.simulate import InjectedAnomaly


def alert(device: str, ts: int, *, event: str = "open", alert_id: str | None = None) -> Alert:
    return Alert(alert_id=alert_id or f"{device}-{ts}", event=event, device_id=device, ts=ts,  # type: ignore[arg-type]
                 episode_start_ts=ts, channel="value", actual=1.0, forecast=0.0, residual=1.0,
                 smoothed_residual=1.0, threshold=0.5, score=0.99, method="zscore", model_version="v",
                 processing_ms=0.0, latency_ms=0.0)


TRUTH = [
    InjectedAnomaly("d1", "spike", 1000, 1000, 9.0),
    InjectedAnomaly("d2", "drift", 2000, 3000, 12.0),
    InjectedAnomaly("d3", "spike", 5000, 5000, 10.0),
]


def test_detected_inside_window_and_grace() -> None:
    report = match(TRUTH, [alert("d1", 1000), alert("d2", 3400)], grace_ms=500)
    assert report.injected == {"drift": 1, "spike": 2}
    assert report.detected == {"drift": 1, "spike": 1}
    assert report.false_alerts == 0
    assert report.alerts == 2
    assert report.rate("spike") == 0.5
    assert report.rate("drift") == 1.0
    assert report.rate("flatline") is None


def test_outside_window_is_a_false_alert() -> None:
    alerts = [
        alert("d1", 999),  # before the start
        alert("d2", 3501),  # after end + grace
        alert("d9", 1000),  # a device with no anomaly
        alert("d3", 1000),  # right time, wrong device's window
    ]
    report = match(TRUTH, alerts, grace_ms=500)
    assert report.detected == {"drift": 0, "spike": 0}
    assert report.false_alerts == 4
    assert report.alerts == 4


def test_grace_boundary_is_inclusive() -> None:
    assert match(TRUTH, [alert("d3", 5200)], grace_ms=200).detected["spike"] == 1
    assert match(TRUTH, [alert("d3", 5201)], grace_ms=200).false_alerts == 1


def test_duplicate_alert_ids_count_once() -> None:
    dup = alert("d9", 1, alert_id="same")
    report = match(TRUTH, [dup, dup, alert("d1", 1000, alert_id="x"), alert("d1", 1000, alert_id="x")],
                   grace_ms=0)
    assert report.false_alerts == 1
    assert report.alerts == 2
    assert report.detected["spike"] == 1


def test_resolve_events_are_ignored() -> None:
    report = match(TRUTH, [alert("d1", 1000, event="resolve"), alert("d9", 5, event="resolve")], grace_ms=0)
    assert report.detected == {"drift": 0, "spike": 0}
    assert report.false_alerts == 0
    assert report.alerts == 0


def test_empty_inputs() -> None:
    report = match([], [], grace_ms=0)
    assert report == DetectionReport()
