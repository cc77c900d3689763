"""Records handed to the producer as one record batch per partition."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streamer.codec import Alert, DeadLetter, decode_alert
from streamer.kafka.batching import send_records
from streamer.kafka.publisher import Publisher
from tests.fakes import FakeProducer


async def test_explicit_partitions_are_kept_and_full_batches_split_in_order() -> None:
    producer = FakeProducer(batch_capacity=2)
    records = [(1, f"k{i}".encode(), f"v{i}".encode()) for i in range(5)] + [(0, b"x", b"y")]
    futures = await send_records(producer, "t", records)
    await asyncio.gather(*futures)
    assert producer.batches == [("t", 1, 2), ("t", 1, 2), ("t", 1, 1), ("t", 0, 1)]
    assert [value for topic, key, value, partition in producer.sent if partition == 1] == [
        f"v{i}".encode() for i in range(5)]


async def test_keyed_records_go_where_the_producers_default_partitioner_puts_them() -> None:
    producer = FakeProducer(partitions=6)
    keys = [f"pump-{i}".encode() for i in range(40)]
    await asyncio.gather(*await send_records(producer, "t", [(None, key, b"v") for key in keys]))
    expected = DefaultPartitioner()
    assert {key: partition for _, key, _, partition in producer.sent} == {
        key: expected(key, list(range(6)), list(range(6))) for key in keys}
    assert len(producer.batches) == len({p for _, _, _, p in producer.sent})  # one batch per partition


def alert(device_id: str, ts: int) -> Alert:
    return Alert(alert_id=f"{device_id}-{ts}", event="open", device_id=device_id, ts=ts, episode_start_ts=ts,
                 channel="value", actual=1.0, forecast=0.0, residual=1.0, smoothed_residual=None,
                 threshold=None, score=0.99, method="zscore", model_version="v", processing_ms=1.0,
                 latency_ms=2.0)


async def test_publisher_sends_alerts_and_dead_letters_in_batches_and_reports_a_failed_ack() -> None:
    producer = FakeProducer(partitions=3)
    letter = DeadLetter(reason="malformed_json", detail="not JSON", source_topic="readings", partition=0,
                        offset=7, kafka_timestamp=0, key="bad", value="{", key_base64="YmFk",
                        value_base64="ew==", rejected_at=1)
    alerts = [alert("pump-1", 1), alert("pump-1", 2), alert("pump-2", 3)]
    done = await Publisher(producer, "alerts", "dead").send(alerts, [(b"bad", letter)] * 50)
    await done
    sent_alerts = [decode_alert(value) for topic, _, value, _ in producer.sent if topic == "alerts" and value]
    assert [a.ts for a in sent_alerts if a.device_id == "pump-1"] == [1, 2]  # order kept per device
    assert sum(n for topic, _, n in producer.batches if topic == "dead") == 50
    assert len([b for b in producer.batches if b[0] == "dead"]) == 1  # one key: one partition, one batch
    failing = FakeProducer(fail=RuntimeError("not acknowledged"))
    with pytest.raises(RuntimeError, match="not acknowledged"):
        await (await Publisher(failing, "alerts", "dead").send(alerts, []))
