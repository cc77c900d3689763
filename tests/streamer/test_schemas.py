"""The published JSON Schemas agree with what the code reads and writes."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import jsonschema
import pytest

from streamer.codec import (
    REASONS,
    Alert,
    Driver,
    ReadingDecoder,
    Rejection,
    dead_letter,
    decode_alert,
    encode_alert,
    encode_dead_letter,
)
from streamer.config import ReadingsConfig
from streamer.feedback.messages import (
    Feedback,
    FeedbackRejection,
    encode_feedback,
    feedback_key,
    parse_feedback,
)
from streamer.vocabulary import FEEDBACK_REJECTION_REASONS
from tests.fakes import FakeRecord


def _schema(name: str) -> dict[str, Any]:
    text = resources.files("streamer").joinpath("schemas", f"{name}.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _decoder() -> ReadingDecoder:
    readings = ReadingsConfig()
    return ReadingDecoder(readings.channels, device_id_pattern=readings.device_id_pattern,
                          max_message_bytes=readings.max_message_bytes, max_future_ms=readings.max_future_ms)


@pytest.mark.parametrize("payload", [
    {"device_id": "pump-17", "ts": 1700000000000, "value": 3.2},
    {"device_id": "pump-17", "ts": "2023-11-14T22:13:20Z", "value": 3},
])
def test_valid_readings_match_schema_and_decode(payload: dict[str, Any]) -> None:
    jsonschema.validate(payload, _schema("reading"))
    decoded = _decoder().decode([FakeRecord(json.dumps(payload).encode(), b"pump-17")], fetched_at=1.8e9)
    assert len(decoded.readings) == 1
    assert decoded.rejections == []


@pytest.mark.parametrize("payload", [
    {"device_id": "pump-17", "value": 3.2},
    {"device_id": "pump-17", "ts": 1, "value": "3.2"},
    {"device_id": "pump-17", "ts": 1},
    {"device_id": "pump-17", "ts": 1, "value": 1.0, "values": {"value": 1.0}},
])
def test_invalid_readings_fail_schema_and_are_rejected(payload: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, _schema("reading"))
    decoded = _decoder().decode([FakeRecord(json.dumps(payload).encode(), b"pump-17")], fetched_at=1.8e9)
    assert len(decoded.readings) == 0
    assert len(decoded.rejections) == 1


def _alert(*drivers: Driver) -> Alert:
    return Alert(alert_id="55ee746e-bf48-57ad-90b6-4e27698229ad", event="open", device_id="pump-17",
                 ts=1700000000000, episode_start_ts=1700000000000, channel="temp", actual=9.0,
                 forecast=1.0, residual=8.0, smoothed_residual=6.0, threshold=4.0, score=0.99,
                 method="zscore", model_version="baseline-abc", processing_ms=1.2, latency_ms=20.5,
                 drivers=drivers)


TEMP = Driver(channel="temp", actual=9.0, forecast=1.0, residual=8.0, score=0.99, share=0.9)
FLOW = Driver(channel="flow", actual=2.0, forecast=None, residual=None, score=0.11, share=0.1)


def test_alert_matches_schema() -> None:
    document = json.loads(encode_alert(_alert(TEMP, FLOW)))
    jsonschema.validate(document, _schema("alert"))
    assert document["schema_version"] == 2
    assert document["drivers"][1] == {"channel": "flow", "actual": 2.0, "forecast": None, "residual": None,
                                      "score": 0.11, "share": 0.1}


@pytest.mark.parametrize("change", [
    {"drivers": None},  # a version 2 alert explains itself
    {"drivers": []},  # at least the alert's channel
    {"drivers": [{"channel": "temp", "actual": 9.0, "forecast": 1.0, "residual": 8.0, "score": 0.99}]},
    {"drivers": [{"channel": "temp", "actual": 9.0, "forecast": 1.0, "residual": 8.0, "score": 0.99,
                  "share": 1.0, "unit": "C"}]},
    {"schema_version": 1},
])
def test_alerts_without_drivers_or_with_malformed_ones_fail_the_schema(change: dict[str, Any]) -> None:
    document = {**json.loads(encode_alert(_alert(TEMP))), **change}
    document = {key: value for key, value in document.items() if value is not None}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, _schema("alert"))


def test_a_version_1_alert_still_decodes_with_no_drivers() -> None:
    document = json.loads(encode_alert(_alert(TEMP)))
    del document["drivers"]
    document["schema_version"] = 1
    alert = decode_alert(json.dumps(document).encode())
    assert alert.drivers == () and alert.schema_version == 1


def test_dead_letter_matches_schema_and_lists_every_reason() -> None:
    schema = _schema("dead_letter")
    every_reason = list(dict.fromkeys([*REASONS, *FEEDBACK_REJECTION_REASONS]))
    assert schema["properties"]["reason"]["enum"] == every_reason
    letter = dead_letter(FakeRecord(b"\xff{not json"), Rejection(0, "malformed_json", "bad"), 5)
    jsonschema.validate(json.loads(encode_dead_letter(letter)), schema)


ALERT_ID = "55ee746e-bf48-57ad-90b6-4e27698229ad"
DEVICE_PATTERN = re.compile(ReadingsConfig().device_id_pattern)


@pytest.mark.parametrize("message", [
    Feedback(kind="false_alarm", device_id="pump-17", alert_id=ALERT_ID, reason="valve test", author="ana"),
    Feedback(kind="confirmed", device_id="pump-17", alert_id=ALERT_ID, feedback_id="f-1", ts=1700000000000),
    Feedback(kind="missed", device_id="pump-17", start_ts=1, end_ts=2, channel="value"),
    Feedback(kind="new_normal", device_id="pump-17", from_ts=1700000000000),
    Feedback(kind="mute", device_pattern="pump-*", until_ts=1700000000000, reason="maintenance"),
    Feedback(kind="unmute", device_id="pump-17"),
])
def test_valid_feedback_matches_schema_and_parses(message: Feedback) -> None:
    data = encode_feedback(message)
    jsonschema.validate(json.loads(data), _schema("feedback"))
    assert parse_feedback(FakeRecord(data, feedback_key(message)), DEVICE_PATTERN) == message


@pytest.mark.parametrize("payload", [
    {"kind": "false_alarm", "device_id": "pump-17"},  # no alert_id
    {"kind": "missed", "device_id": "pump-17", "start_ts": 5},  # no end_ts
    {"kind": "mute", "device_id": "pump-17"},  # no until_ts
    {"kind": "new_normal", "device_pattern": "pump-*"},  # a pattern only mutes
    {"kind": "unmute"},  # no device
    {"kind": "unmute", "device_id": "pump-17", "device_pattern": "pump-*"},
    {"kind": "explode", "device_id": "pump-17"},
    {"kind": "unmute", "device_id": "pump-17", "extra": 1},
    {"kind": "mute", "device_id": "pump-17", "until_ts": -5},
])
def test_invalid_feedback_fails_schema_and_is_rejected(payload: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, _schema("feedback"))
    outcome = parse_feedback(FakeRecord(json.dumps(payload).encode(), None), DEVICE_PATTERN)
    assert isinstance(outcome, FeedbackRejection)
    assert outcome.reason == "invalid_feedback"
