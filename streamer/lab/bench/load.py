"""The benchmarks' load generator: a synthetic fleet produced to the input topic, as a backlog or at a rate.

Reading ``k`` of a run goes to device ``k % devices`` (a round robin, so
every device reads at the same rate) on partition ``device % partitions``
(a fixed map: one device's readings stay in order). Records are appended to
one batch per partition and sent with ``send_batch``, which skips aiokafka's
per-record accumulator: the generator shares the machine with the broker and
the daemon, and the cheaper it is, the more of the machine the daemon gets.

Event time is the wall clock when a reading is generated (live loads) or a
past time step (backlogs), so event→alert latency measured downstream
includes everything after the reading "happened": sending, the broker,
fetching, batching, scoring and publishing the alert.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer

from streamer.config import KafkaConfig
from streamer.kafka.clients import connection_kwargs
from streamer.lab.bench.fleet import IntArray, SignalFleet, encode_readings, partition_of

# Bigger batches than aiokafka's 16 KiB default: fewer produce requests per reading.
MAX_BATCH_BYTES = 512 * 1024
# How often a fixed-rate load wakes up to send what is due: one batch per
# partition per tick, as a producer lingering 20 ms would send. Readings are
# stamped when sent, so the tick adds nothing to the latency measured. Finer
# ticks mean many more, smaller batches, and the embedded broker's memory
# storage slows down with the number of batches in a partition.
TICK_S = 0.02
# Outstanding send futures before the generator waits for acknowledgements.
MAX_PENDING = 256


def make_load_producer(kafka: KafkaConfig) -> AIOKafkaProducer:
    """A producer for the generator: the daemon's connection settings, acks=all, big batches."""
    return AIOKafkaProducer(acks="all", enable_idempotence=kafka.idempotent_producer,
                            max_batch_size=MAX_BATCH_BYTES, max_request_size=2 * MAX_BATCH_BYTES,
                            **connection_kwargs(kafka))


class LoadGenerator:
    """Produces a :class:`SignalFleet`'s readings round robin over its devices."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, fleet: SignalFleet, *, partitions: int,
                 channels: Sequence[str]) -> None:
        self.producer = producer
        self.topic = topic
        self.fleet = fleet
        self.partitions = partitions
        self.channels = list(channels)
        self.sent = 0  # readings handed to the producer
        self._last_ts = np.full(fleet.devices, -1, dtype=np.int64)
        self._pending: list[asyncio.Future[Any]] = []

    async def send(self, count: int, ts_ms: int | IntArray) -> None:
        """Send the next ``count`` readings (at most one per device) stamped ``ts_ms``.

        A device's event time always moves forward: a reading stamped no
        later than the device's previous one is stamped 1 ms after it.
        """
        devices_total = self.fleet.devices
        if count > devices_total:
            raise ValueError(f"at most {devices_total} readings per call (one per device), got {count}")
        index = self.sent + np.arange(count, dtype=np.int64)
        devices = index % devices_total
        steps = index // devices_total
        stamps = np.broadcast_to(np.asarray(ts_ms, dtype=np.int64), (count,))
        ts = np.maximum(stamps, self._last_ts[devices] + 1)
        self._last_ts[devices] = ts
        pairs = encode_readings(devices, ts, self.fleet.values(devices, steps), self.channels)
        partitions = partition_of(devices, self.partitions)
        for partition in np.unique(partitions).tolist():
            batch = self.producer.create_batch()
            for row in np.flatnonzero(partitions == partition).tolist():
                key, value = pairs[row]
                if batch.append(key=key, value=value, timestamp=None) is None:  # full
                    await self._send_batch(batch, partition)
                    batch = self.producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            await self._send_batch(batch, partition)
        self.sent += count

    async def _send_batch(self, batch: Any, partition: int) -> None:
        future = await self.producer.send_batch(batch, self.topic, partition=partition)
        self._pending.append(future)
        if len(self._pending) >= MAX_PENDING:
            await self.flush()

    async def flush(self) -> None:
        """Wait until every batch sent so far is acknowledged (raises the first failure)."""
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)

    def prune(self) -> None:
        """Forget acknowledged batches; raise a failed one's error."""
        still: list[asyncio.Future[Any]] = []
        for future in self._pending:
            if not future.done():
                still.append(future)
            else:
                future.result()  # raises the send's error, if any
        self._pending = still

    async def backlog(self, steps: int, *, interval_ms: int, end_ms: int | None = None) -> int:
        """Every device's next ``steps`` readings, event times ``interval_ms`` apart ending before ``end_ms``.

        Returns the number of readings sent (all acknowledged).
        """
        end_ms = int(time.time() * 1000) if end_ms is None else end_ms
        for step in range(steps):
            await self.send(self.fleet.devices, end_ms - (steps - step) * interval_ms)
        await self.flush()
        return steps * self.fleet.devices

    async def at_rate(self, rate: float, seconds: float) -> tuple[int, float]:
        """Send ``rate`` readings per second for ``seconds``; ``(readings sent, seconds taken)``.

        Each tick sends what the schedule says is due since the start, so a
        late tick catches up; if the generator itself cannot keep up (CPU),
        fewer readings go out and the achieved rate says so.
        """
        started = time.monotonic()
        first = self.sent
        devices = self.fleet.devices
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= seconds:
                break
            due = int(rate * elapsed) - (self.sent - first)
            while due > 0:
                chunk = min(due, devices)
                await self.send(chunk, int(time.time() * 1000))
                due -= chunk
            self.prune()
            await asyncio.sleep(TICK_S)
        return self.sent - first, time.monotonic() - started
