import base64
from collections import Counter

import msgspec
import numpy as np
import pytest

from streamer.codec import (
    REASONS,
    Alert,
    DecodedBatch,
    Driver,
    ReadingBatch,
    ReadingDecoder,
    dead_letter,
    decode_alert,
    encode_alert,
    encode_dead_letter,
    encode_reading,
)
from tests.fakes import FakeRecord

NOW_S = 1_700_000_000.0
NOW_MS = int(NOW_S * 1000)
PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}"
MAX_BYTES = 512
DAY_MS = 86_400_000


def decoder(channels: tuple[str, ...] = ("value",)) -> ReadingDecoder:
    return ReadingDecoder(channels, device_id_pattern=PATTERN, max_message_bytes=MAX_BYTES,
                          max_future_ms=DAY_MS)


def records(*values: bytes | None) -> list[FakeRecord]:
    return [FakeRecord(value=v, offset=100 + i) for i, v in enumerate(values)]


def decode_one(value: bytes | None, *, key: bytes | None = None,
               channels: tuple[str, ...] = ("value",)) -> DecodedBatch:
    return decoder(channels).decode([FakeRecord(value=value, key=key)], fetched_at=NOW_S)


def reading(device: str = "pump-1", ts: object = NOW_MS, value: object = 1.5) -> bytes:
    return msgspec.json.encode({"device_id": device, "ts": ts, "value": value})


def test_valid_scalar_reading_becomes_a_row() -> None:
    out = decoder().decode([FakeRecord(reading(), key=b"pump-1", partition=2, offset=41)], fetched_at=NOW_S)
    assert out.rejections == []
    batch = out.readings
    assert len(batch) == 1
    assert batch.device_ids == ["pump-1"]
    assert batch.ts_ms.tolist() == [NOW_MS]
    assert batch.values.shape == (1, 1)
    assert batch.values[0, 0] == 1.5
    assert batch.fetched_at.tolist() == [NOW_S]
    assert batch.record_index.tolist() == [0]


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2023-11-14T22:13:20.123Z", 1_700_000_000_123),
        ("2023-11-14T22:13:20.123", 1_700_000_000_123),  # naive is UTC
        ("2023-11-15T00:13:20.123+02:00", 1_700_000_000_123),
        (1_700_000_000_123.9, 1_700_000_000_123),
    ],
)
def test_timestamp_forms(ts: object, expected: int) -> None:
    out = decode_one(reading(ts=ts))
    assert out.rejections == []
    assert out.readings.ts_ms.tolist() == [expected]


def test_multi_channel_values_follow_configured_order() -> None:
    payload = msgspec.json.encode(
        {"device_id": "m-1", "ts": NOW_MS, "values": {"vibration": 0.25, "temp": 21.5, "extra": 9.0}}
    )
    out = decode_one(payload, channels=("temp", "vibration"))
    assert out.rejections == []
    assert out.readings.values.tolist() == [[21.5, 0.25]]


def test_empty_batch_has_channel_shaped_values() -> None:
    out = decoder(("a", "b")).decode([], fetched_at=NOW_S)
    assert len(out.readings) == 0
    assert out.readings.values.shape == (0, 2)
    assert out.rejections == []


REJECTED = [
    pytest.param(None, None, ("value",), "empty", id="tombstone"),
    pytest.param(b"", None, ("value",), "empty", id="empty-bytes"),
    pytest.param(b'{"device_id":"a","ts":1,"value":1.0,"pad":"' + b"x" * MAX_BYTES + b'"}', None,
                 ("value",), "oversized", id="oversized"),
    pytest.param(b"{not json", None, ("value",), "malformed_json", id="malformed"),
    pytest.param(b'{"device_id":"a","ts":1,"value":1}trailing', None, ("value",), "malformed_json",
                 id="trailing-garbage"),
    pytest.param(b'{"ts":1,"value":1}', None, ("value",), "missing_field", id="no-device"),
    pytest.param(b'{"device_id":"a","value":1}', None, ("value",), "missing_field", id="no-ts"),
    pytest.param(b'{"device_id":"a","ts":1}', None, ("value",), "missing_field", id="no-value"),
    pytest.param(b'{"device_id":"a","ts":1,"value":true}', None, ("value",), "wrong_type", id="bool-value"),
    pytest.param(b'{"device_id":"a","ts":1,"value":"1.5"}', None, ("value",), "wrong_type",
                 id="string-value"),
    pytest.param(b'{"device_id":7,"ts":1,"value":1}', None, ("value",), "wrong_type", id="int-device"),
    pytest.param(b"[1, 2]", None, ("value",), "wrong_type", id="array"),
    pytest.param(b'{"device_id":"a","ts":1,"value":1,"values":{"value":1}}', None, ("value",),
                 "wrong_type", id="value-and-values"),
    pytest.param(b'{"device_id":"a","ts":1,"value":NaN}', None, ("value",), "non_finite", id="nan-token"),
    pytest.param(b'{"device_id":"a","ts":1,"value":Infinity}', None, ("value",), "non_finite",
                 id="infinity"),
    pytest.param(b'{"device_id":"a","ts":1,"value":-Infinity}', None, ("value",), "non_finite",
                 id="minus-infinity"),
    pytest.param(b'{"device_id":"a","ts":1,"value":1e400}', None, ("value",), "non_finite", id="1e400"),
    pytest.param(b'{"device_id":"a","ts":1,"values":{"value":NaN}}', None, ("value",), "non_finite",
                 id="nan-in-values"),
    pytest.param(b'{"device_id":"a","ts":-5,"value":1}', None, ("value",), "invalid_timestamp",
                 id="negative-ts"),
    pytest.param(msgspec.json.encode({"device_id": "a", "ts": NOW_MS + 2 * DAY_MS, "value": 1}), None,
                 ("value",), "invalid_timestamp", id="far-future"),
    pytest.param(b'{"device_id":"a","ts":"yesterday","value":1}', None, ("value",), "invalid_timestamp",
                 id="unparseable-ts"),
    pytest.param(b'{"device_id":"","ts":1,"value":1}', None, ("value",), "invalid_device_id",
                 id="empty-device"),
    pytest.param(b'{"device_id":"-bad","ts":1,"value":1}', None, ("value",), "invalid_device_id",
                 id="pattern"),
    pytest.param(msgspec.json.encode({"device_id": "d" * 129, "ts": 1, "value": 1}), None, ("value",),
                 "invalid_device_id", id="too-long-device"),
    pytest.param(b'{"device_id":"a","ts":1,"value":1}', b"b", ("value",), "key_mismatch", id="key"),
    pytest.param(b'{"device_id":"a","ts":1,"values":{"other":1}}', None, ("value",), "channel_mismatch",
                 id="missing-channel"),
    pytest.param(b'{"device_id":"a","ts":1,"value":1}', None, ("temp", "vib"), "channel_mismatch",
                 id="scalar-for-two-channels"),
]


@pytest.mark.parametrize(("value", "key", "channels", "reason"), REJECTED)
def test_rejection_reasons(value: bytes | None, key: bytes | None, channels: tuple[str, ...],
                           reason: str) -> None:
    out = decode_one(value, key=key, channels=channels)
    assert len(out.readings) == 0
    assert [r.reason for r in out.rejections] == [reason]
    assert out.rejections[0].record_index == 0
    assert out.rejections[0].detail


def test_every_decoder_reason_is_a_declared_reason() -> None:
    produced = {param.values[3] for param in REJECTED}
    assert produced <= set(REASONS)
    # Only the pipeline produces these three; everything else comes from the decoder.
    assert set(REASONS) - produced == {"duplicate_timestamp", "out_of_order", "device_limit"}


def test_mixed_batch_accounts_for_every_record_and_keeps_order() -> None:
    values: list[bytes | None] = [
        reading("a", NOW_MS, 1.0),
        None,
        b"{oops",
        reading("b", NOW_MS, 2.0),
        b'{"device_id":"c","ts":1,"value":NaN}',
        reading("c", NOW_MS, 3.0),
        reading("a", "not a time", 4.0),
        b'{"device_id":"d","ts":1,"value":1e400}',
        reading("a", NOW_MS + 1, 5.0),
    ]
    recs = records(*values)
    out = decoder().decode(recs, fetched_at=NOW_S)
    batch = out.readings
    assert len(batch) + len(out.rejections) == len(recs)
    assert batch.record_index.tolist() == [0, 3, 5, 8]
    assert batch.device_ids == ["a", "b", "c", "a"]
    assert batch.values[:, 0].tolist() == [1.0, 2.0, 3.0, 5.0]
    assert [r.record_index for r in out.rejections] == [1, 2, 4, 6, 7]
    assert Counter(r.reason for r in out.rejections) == Counter(
        {"empty": 1, "malformed_json": 1, "non_finite": 2, "invalid_timestamp": 1}
    )
    # each record is either a row or a rejection, never both
    assert set(batch.record_index.tolist()).isdisjoint(r.record_index for r in out.rejections)


def test_decode_does_not_mutate_records() -> None:
    recs = records(reading("a"), b"{bad")
    before = [(r.value, r.key, r.offset) for r in recs]
    decoder().decode(recs, fetched_at=NOW_S)
    assert [(r.value, r.key, r.offset) for r in recs] == before


def test_concat_joins_batches_in_order() -> None:
    first = decoder().decode(records(reading("a", NOW_MS, 1.0)), fetched_at=NOW_S).readings
    second = decoder().decode(records(reading("b", NOW_MS, 2.0), reading("c", NOW_MS, 3.0)),
                              fetched_at=NOW_S).readings
    joined = ReadingBatch.concat([first, second], channels=1)
    assert joined.device_ids == ["a", "b", "c"]
    assert joined.values[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert len(ReadingBatch.concat([], channels=2)) == 0


def test_dead_letter_carries_source_and_exact_bytes() -> None:
    raw = b"\xff\xfe{not utf-8"
    record = FakeRecord(value=raw, key=b"dev-\x80", topic="readings", partition=5, offset=77, timestamp=123)
    out = decoder().decode([record], fetched_at=NOW_S)
    letter = dead_letter(record, out.rejections[0], now_ms=999)
    assert letter.reason == "malformed_json"
    assert letter.detail == out.rejections[0].detail
    assert (letter.source_topic, letter.partition, letter.offset) == ("readings", 5, 77)
    assert letter.kafka_timestamp == 123
    assert letter.rejected_at == 999
    assert letter.value_base64 is not None and letter.key_base64 is not None
    assert base64.b64decode(letter.value_base64) == raw
    assert base64.b64decode(letter.key_base64) == b"dev-\x80"
    assert letter.value is not None and "\ufffd" in letter.value  # text form replaces bad bytes
    decoded = msgspec.json.decode(encode_dead_letter(letter))
    assert decoded["reason"] == "malformed_json"
    assert base64.b64decode(decoded["value_base64"]) == raw


def test_dead_letter_of_tombstone_has_no_value() -> None:
    record = FakeRecord(value=None, key=None)
    out = decoder().decode([record], fetched_at=NOW_S)
    letter = dead_letter(record, out.rejections[0], now_ms=1)
    assert letter.reason == "empty"
    assert letter.value is None and letter.value_base64 is None and letter.key_base64 is None


def test_alert_round_trip() -> None:
    alert = Alert(alert_id="id-1", event="open", device_id="pump-1", ts=NOW_MS, episode_start_ts=NOW_MS,
                  channel="value", actual=9.5, forecast=1.25, residual=8.25, smoothed_residual=6.0,
                  threshold=3.0, score=0.999, method="zscore", model_version="baseline-x",
                  processing_ms=1.5, latency_ms=2.5)
    data = encode_alert(alert)
    assert decode_alert(data) == alert
    assert msgspec.json.decode(data)["schema_version"] == 2
    explained = msgspec.structs.replace(alert, drivers=(
        Driver(channel="value", actual=9.5, forecast=1.25, residual=8.25, score=0.999, share=1.0),))
    assert decode_alert(encode_alert(explained)) == explained


def test_encode_reading_decodes_back() -> None:
    out = decoder(("t", "v")).decode(records(encode_reading("x-1", NOW_MS, {"t": 1.0, "v": 2.0})),
                                     fetched_at=NOW_S)
    assert out.rejections == []
    assert out.readings.values.tolist() == [[1.0, 2.0]]
    scalar = decoder().decode(records(encode_reading("x-1", NOW_MS, 3.5)), fetched_at=NOW_S)
    assert scalar.readings.values.tolist() == [[3.5]]
    assert np.array_equal(scalar.readings.ts_ms, [NOW_MS])
