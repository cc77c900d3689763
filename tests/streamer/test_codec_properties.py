"""Hostile input never crashes decoding or scoring, and every record is accounted for."""

from __future__ import annotations

import json
import time

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.codec import REASONS, ReadingDecoder
from streamer.config import load_config
from streamer.scoring.pipeline import ScoringPipeline
from tests.fakes import FakeRecord

_device = st.one_of(st.sampled_from(["pump-1", "pump-2", "fan-9"]), st.text(max_size=20))
_number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70),
                    st.text(max_size=5), st.booleans(), st.none())
_ts = st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=30),
                st.just("2024-01-01T00:00:00Z"), st.none())
_reading = st.fixed_dictionaries(
    {},
    optional={"device_id": _device, "ts": _ts, "value": _number,
              "values": st.dictionaries(st.text(max_size=8), _number, max_size=3)},
)


def _json(obj: object) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


_payload = st.one_of(
    _reading.map(_json),
    st.binary(max_size=200),
    _reading.map(_json).map(lambda b: b[: len(b) // 2]),  # truncated
    st.just(b'{"device_id": "pump-1", "ts": 1, "value": 1}' + b" " * 70_000),  # oversized
    st.none(),
)
_key = st.one_of(st.none(), st.sampled_from([b"pump-1", b"pump-2", b"fan-9"]), st.binary(max_size=10))


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.tuples(_key, _payload), max_size=40))
def test_every_record_is_a_reading_or_a_counted_rejection(
    items: list[tuple[bytes | None, bytes | None]],
) -> None:
    config = load_config(None, environ={})
    readings = config.readings
    decoder = ReadingDecoder(readings.channels, device_id_pattern=readings.device_id_pattern,
                             max_message_bytes=readings.max_message_bytes,
                             max_future_ms=readings.max_future_ms)
    records = [FakeRecord(value, key, offset=offset) for offset, (key, value) in enumerate(items)]
    decoded = decoder.decode(records, fetched_at=time.time())

    rows = set(decoded.readings.record_index.tolist())
    rejected = {r.record_index for r in decoded.rejections}
    assert rows.isdisjoint(rejected)
    assert rows | rejected == set(range(len(records)))
    assert all(r.reason in REASONS for r in decoded.rejections)
    assert np.isfinite(decoded.readings.values).all()

    pipeline = ScoringPipeline(config)
    result = pipeline.score(decoded.readings)
    assert result.scored + result.warmup + len(result.rejections) == len(decoded.readings)
    assert all(r.reason in REASONS for r in result.rejections)


_flood = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(["pump-1", "pump-2"]),  # a few devices that repeat...
                  st.text(alphabet="abcdefghijklmnopqrstuvwxyzé日本0123456789-", min_size=1, max_size=12)),
        st.integers(0, 50),  # ...with small time ranges, so duplicates and reorders are common
        st.floats(-1e6, 1e6),
    ),
    min_size=1, max_size=200,
)


@settings(max_examples=60, deadline=None, database=None)
@given(_flood, st.integers(1, 3))
def test_floods_of_new_devices_and_reordered_readings_stay_bounded_and_accounted(
    readings: list[tuple[str, int, float]], batches: int,
) -> None:
    config = load_config(None, environ={"STREAMER__BUFFERS__MAX_DEVICES": "8",
                                        "STREAMER__BUFFERS__INITIAL_DEVICES": "2",
                                        "STREAMER__PREDICTOR__KIND": "baseline"})
    settings_ = config.readings
    decoder = ReadingDecoder(settings_.channels, device_id_pattern=settings_.device_id_pattern,
                             max_message_bytes=settings_.max_message_bytes,
                             max_future_ms=settings_.max_future_ms)
    pipeline = ScoringPipeline(config)
    records = [FakeRecord(_json({"device_id": device, "ts": 1_700_000_000_000 + ts, "value": v}),
                          device.encode(), offset=offset)
               for offset, (device, ts, v) in enumerate(readings)]
    accepted: dict[str, list[int]] = {}
    accounted = 0
    size = -(-len(records) // batches)
    for start in range(0, len(records), size):
        chunk = records[start:start + size]
        decoded = decoder.decode(chunk, fetched_at=time.time())
        result = pipeline.score(decoded.readings)
        accounted += len(decoded.rejections) + len(result.rejections) + result.scored + result.warmup
        rejected = {r.record_index for r in result.rejections}
        reasons = {r.reason for r in result.rejections}
        assert reasons <= {"device_limit", "duplicate_timestamp", "out_of_order"}
        batch = decoded.readings
        for row, (device, ts) in enumerate(zip(batch.device_ids, batch.ts_ms.tolist(), strict=True)):
            if int(batch.record_index[row]) not in rejected:
                accepted.setdefault(device, []).append(ts)
    assert accounted == len(records)  # every record: a reading scored or warming up, or a counted rejection
    assert len(pipeline.registry) <= 8  # a flood of new ids cannot grow state past buffers.max_devices
    assert pipeline.registry.table.capacity <= 8
    for times in accepted.values():  # what was accepted is strictly increasing per device
        assert times == sorted(set(times))
