from __future__ import annotations

from streamer.alertmanager.events import AlertEvent, Driver, Rejected, decode_event
from tests.streamer.alertmanager.builders import alert_bytes


def test_an_alert_without_drivers_decodes_with_none() -> None:
    decoded = decode_event(alert_bytes("ep-1", "open"))
    assert isinstance(decoded, AlertEvent)
    assert decoded.alert.alert_id == "ep-1"
    assert decoded.drivers == ()


def test_drivers_are_read_when_present() -> None:
    decoded = decode_event(alert_bytes(drivers=[
        {"channel": "temp", "actual": 80.0, "forecast": 70.0, "residual": 10.0, "share": 0.7},
        {"channel": "vibration", "share": 0.3, "extra": "ignored"}]))
    assert isinstance(decoded, AlertEvent)
    assert decoded.drivers == (Driver("temp", 0.7, 80.0, 70.0, 10.0), Driver("vibration", 0.3))


def test_a_malformed_explanation_never_costs_the_alert() -> None:
    decoded = decode_event(alert_bytes(drivers=[{"share": "most"}]))
    assert isinstance(decoded, AlertEvent)
    assert decoded.drivers == ()


def test_records_that_are_not_alerts_are_rejected_with_a_reason() -> None:
    assert decode_event(None) == Rejected("empty", "record has no value")
    assert decode_event(b"").reason == "empty"  # type: ignore[union-attr]
    assert decode_event(b"{oops").reason == "malformed_json"  # type: ignore[union-attr]
    assert decode_event(b'{"alert_id": "x"}').reason == "invalid_alert"  # type: ignore[union-attr]
    assert decode_event(alert_bytes().replace(b'"open"', b'"opened"')).reason == "invalid_alert"  # type: ignore[union-attr]
