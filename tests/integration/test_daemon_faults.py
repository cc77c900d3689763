"""Faults injected at our own seams while talking to the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from unittest.mock import patch

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaTimeoutError

from streamer.codec import encode_reading
from streamer.config import Config
from streamer.kafka.publisher import Publisher
from streamer.runtime.application import Application
from streamer.scoring.pipeline import ScoringPipeline

pytestmark = pytest.mark.integration


async def _produce(config: Config, count: int, start_ts: int = 1_700_000_000_000) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(config.kafka.input_topic, key=f"dev-{i % 10}".encode(),
                                value=encode_reading(f"dev-{i % 10}", start_ts + i, float(i % 7)))
            for i in range(count)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _committed(config: Config) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers,
                                group_id=config.kafka.group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(config.kafka.input_topic, p))
                for p in range(config.kafka.topic_partitions)}
    finally:
        await consumer.stop()


async def _run_until_exit(daemon: Application, config: Config, count: int) -> int:
    task = asyncio.create_task(daemon.run())
    while not daemon.health.is_ready()[0]:
        assert not task.done(), "daemon exited during start"
        await asyncio.sleep(0.05)
    await _produce(config, count)
    return await asyncio.wait_for(task, 60)


async def test_scoring_failure_exits_nonzero_and_commits_nothing(
    config_factory: Callable[..., Config],
) -> None:
    config = config_factory(metrics={"enabled": False})
    daemon = Application(config)
    with patch.object(ScoringPipeline, "score", side_effect=RuntimeError("model crashed")):
        exit_code = await _run_until_exit(daemon, config, 50)
    assert exit_code == 1
    assert daemon.health.live()[0] is False
    assert set((await _committed(config)).values()) == {None}


@pytest.mark.parametrize("fault", ["send raises", "acknowledgement fails"])
async def test_unacknowledged_alerts_are_not_committed(config_factory: Callable[..., Config], fault: str,
                                                       unacknowledged_send: Callable[..., Any]) -> None:
    config = config_factory(metrics={"enabled": False})
    daemon = Application(config)
    send_fault = (patch.object(Publisher, "send", side_effect=KafkaTimeoutError()) if fault == "send raises"
                  else patch.object(Publisher, "send", unacknowledged_send))
    with send_fault:
        exit_code = await _run_until_exit(daemon, config, 50)
    assert exit_code == 1
    assert set((await _committed(config)).values()) == {None}
