"""Helpers for integration tests that run daemons in process (``Application.run`` as tasks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer

from streamer.codec import Alert, decode_alert
from streamer.config import Config
from streamer.runtime.application import Application


async def until(condition: Callable[[], bool], timeout_s: float, message: str,
                *tasks: asyncio.Task[int]) -> None:
    """Wait for ``condition``; fail with ``message`` after ``timeout_s`` or once a daemon task ends."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for task in tasks:
            assert not task.done(), f"{message}: daemon exited with {task.result()}"
        if condition():
            return
        await asyncio.sleep(0.05)
    pytest.fail(message)


def total(daemon: Application, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(sample.value for family in daemon.metrics.registry.collect() for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def taken_over(daemon: Application) -> bool:
    """Every assigned partition active: the daemon created its topics and took its partitions over."""
    consumer = daemon.consumer
    return consumer is not None and bool(consumer.assignment()) and consumer.assignment() == set(
        daemon.commits.active)


async def read_topic(config: Config, topic: str) -> list[bytes]:
    """Every record value of ``topic`` (read until nothing new came for 1.5 s)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=config.kafka.bootstrap_servers,
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    out: list[bytes] = []
    try:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 1.5:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(record.value for record in records if record.value is not None)
                idle_since = time.monotonic()
    finally:
        await consumer.stop()
    return out


async def alerts_of(config: Config, topic: str | None = None) -> list[Alert]:
    """The alerts on the alert topic (or on ``topic``, e.g. the shadow alert topic)."""
    return [decode_alert(value) for value in await read_topic(config, topic or config.kafka.alert_topic)]
