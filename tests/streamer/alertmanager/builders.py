"""Alert events and records for the bridge's unit tests."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from streamer.alertmanager.events import AlertEvent, decode_event
from streamer.codec import Alert, encode_alert
from tests.fakes import START_MS, FakeRecord

Event = Literal["open", "update", "resolve"]


def alert(alert_id: str = "ep-1", event: Event = "open", *, device: str = "pump-1", ts: int = START_MS,
          score: float = 0.995, channel: str = "value", **fields: Any) -> Alert:
    values: dict[str, Any] = {"actual": 18.98, "forecast": 9.16, "residual": 9.82, "smoothed_residual": 6.34,
                              "threshold": 3.99, "method": "zscore", "model_version": "lstm-abc",
                              "processing_ms": 0.3, "latency_ms": 21.4, **fields}
    return Alert(alert_id=alert_id, event=event, device_id=device, ts=ts, episode_start_ts=START_MS,
                 channel=channel, score=score, **values)


def event_of(*args: Any, drivers: list[dict[str, Any]] | None = None, **kwargs: Any) -> AlertEvent:
    decoded = decode_event(alert_bytes(*args, drivers=drivers, **kwargs))
    assert isinstance(decoded, AlertEvent)
    return decoded


def alert_bytes(*args: Any, drivers: list[dict[str, Any]] | None = None, **kwargs: Any) -> bytes:
    encoded = encode_alert(alert(*args, **kwargs))
    if drivers is None:
        return encoded
    document = msgspec.json.decode(encoded)
    document["drivers"] = drivers
    return msgspec.json.encode(document)


def record(offset: int, *args: Any, partition: int = 0, topic: str = "alerts", **kwargs: Any) -> FakeRecord:
    value = alert_bytes(*args, **kwargs)
    return FakeRecord(value, kwargs.get("device", "pump-1").encode(), topic, partition, offset)
