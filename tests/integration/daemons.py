"""Helpers for integration tests that run daemons in process (``Application.run`` as tasks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamer.codec import Alert, decode_alert, encode_reading
from streamer.config import Config
from streamer.runtime.application import Application

# Event time of step 0 of a test fleet, and the time between its steps.
BASE_TS = 1_700_000_000_000
INTERVAL_MS = 100


def fleet_value(device: int, step: int) -> float:
    """Reading ``step`` of the ``device``-th device of a test fleet: a level, a slow wave, a little noise."""
    rng = np.random.default_rng(device * 100_003 + step)
    return float(10.0 + device + np.sin(step / 5.0 + device) + 0.05 * rng.standard_normal())


async def produce_fleet(config: Config, steps: range, spikes: dict[tuple[str, int], float] | None = None, *,
                        devices: list[str], pace_s: float = 0.0) -> int:
    """Readings of every device for ``steps`` (plus ``spikes`` by device and step); returns how many.

    ``pace_s`` between steps makes a live stream instead of a backlog.
    """
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for step in steps:
            for d, device_id in enumerate(devices):
                reading = fleet_value(d, step) + (spikes or {}).get((device_id, step), 0.0)
                futures.append(await producer.send(
                    config.kafka.input_topic, key=device_id.encode(),
                    value=encode_reading(device_id, BASE_TS + step * INTERVAL_MS, reading)))
            if pace_s:
                await asyncio.sleep(pace_s)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(futures)


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
