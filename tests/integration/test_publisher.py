"""The batched publisher against the real broker: keyed records land where the producer's send puts them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer

from streamer.codec import Alert
from streamer.config import Config
from streamer.kafka.clients import ensure_topics, make_producer
from streamer.kafka.publisher import Publisher

pytestmark = pytest.mark.integration
DEVICES = [f"pump-{i}" for i in range(12)]


def alert(device_id: str, ts: int) -> Alert:
    return Alert(alert_id=f"{device_id}-{ts}", event="open", device_id=device_id, ts=ts, episode_start_ts=ts,
                 channel="value", actual=1.0, forecast=0.0, residual=1.0, smoothed_residual=None,
                 threshold=None, score=0.99, method="zscore", model_version="v", processing_ms=1.0,
                 latency_ms=2.0)


async def test_batched_alerts_land_on_the_partition_of_their_key(
    config_factory: Callable[..., Config],
) -> None:
    config = config_factory()
    kafka = config.kafka
    await ensure_topics(kafka, [kafka.alert_topic, kafka.dead_letter_topic])
    producer = make_producer(kafka)
    await producer.start()
    try:
        # Where the producer's own send() puts each key (its default partitioner).
        expected = {device: (await (await producer.send(kafka.dead_letter_topic, b"probe",
                                                        key=device.encode()))).partition
                    for device in DEVICES}
        done = await Publisher(producer, kafka.alert_topic, kafka.dead_letter_topic).send(
            [alert(device, ts) for ts in (1, 2) for device in DEVICES], [])
        await done
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(kafka.alert_topic, bootstrap_servers=kafka.bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        landed: dict[str, list[tuple[int, int]]] = {}
        deadline = asyncio.get_running_loop().time() + 20
        while sum(map(len, landed.values())) < 2 * len(DEVICES):
            assert asyncio.get_running_loop().time() < deadline, landed
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    assert record.key is not None
                    landed.setdefault(record.key.decode(), []).append((tp.partition, record.offset))
    finally:
        await consumer.stop()
    assert {device: {p for p, _ in spots} for device, spots in landed.items()} == {
        device: {partition} for device, partition in expected.items()}
    assert len(set(expected.values())) > 1  # the fleet spans partitions
