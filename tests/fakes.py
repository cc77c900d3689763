"""Fakes and config builders shared by tests that need no broker.

- :class:`FakeRecord` / :func:`reading_records`: Kafka records as the decoder reads them;
- :class:`FakeConsumer`: an assignment, aiokafka's one paused flag per
  partition, committed offsets, seeks and positions, commits, and a
  ``getmany`` that serves queued results (records or an error);
- :class:`FakeProducer`: records sends and acknowledges them (or fails);
- :class:`HeldSink`: an alert sink whose acknowledgements the test releases;
- :func:`offline_config`: the built-in defaults with the baseline predictor
  and no metrics server, sections replaced by keyword.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from aiokafka import TopicPartition

from streamer.codec import encode_reading
from streamer.config import Config, load_config
from streamer.kafka.batching import RecordBatch

START_MS = 1_700_000_000_000


@dataclass
class FakeRecord:
    """The fields of a Kafka record that the decoder reads."""

    value: bytes | None
    key: bytes | None = None
    topic: str = "readings"
    partition: int = 0
    offset: int = 0
    timestamp: int = START_MS


def reading_records(device_id: str, first_offset: int, count: int, *, partition: int = 0,
                    topic: str = "readings", step_ms: int = 1000, value: float = 1.0) -> list[FakeRecord]:
    """``count`` encoded readings of one device at consecutive offsets."""
    return [FakeRecord(encode_reading(device_id, START_MS + (first_offset + i) * step_ms, value),
                       device_id.encode(), topic, partition, first_offset + i)
            for i in range(count)]


def offline_config(**sections: Mapping[str, object]) -> Config:
    """Built-in defaults, baseline predictor, metrics server off; ``sections`` replace section fields.

    Example: ``offline_config(batching={"max_batch": 3}, kafka={"auto_offset_reset": "latest"})``.
    """
    base = load_config(None, environ={})
    config = msgspec.structs.replace(
        base,
        predictor=msgspec.structs.replace(base.predictor, kind="baseline"),
        metrics=msgspec.structs.replace(base.metrics, enabled=False),
    )
    for name, values in sections.items():
        config = msgspec.structs.replace(config, **{name: msgspec.structs.replace(getattr(config, name),
                                                                                   **values)})
    return config


class FakeConsumer:
    """A group consumer without a broker: what the runtime's engines call, recorded.

    ``fetches`` holds what successive ``getmany`` calls return (a mapping of
    records per partition, or an exception to raise); once empty, ``getmany``
    waits ``timeout_ms`` and returns nothing. ``committed_gate``, when set,
    makes ``committed`` wait for it (a slow takeover).
    """

    def __init__(self, assigned: Sequence[TopicPartition] = (), *, end: int = 42) -> None:
        self.assigned = set(assigned)
        self.paused_now: set[TopicPartition] = set()
        self.fetches: list[Mapping[TopicPartition, Sequence[Any]] | Exception] = []
        self.seeks: list[tuple[str, tuple[TopicPartition, ...]]] = []
        self.positions: dict[TopicPartition, int] = {}
        self.highwaters: dict[TopicPartition, int] = {}
        self.group_offsets: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self.committed_gate: asyncio.Event | None = None
        self.end = end

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_now)

    def pause(self, *partitions: TopicPartition) -> None:
        assert set(partitions) <= self.assigned, "pausing a partition that is not assigned"
        self.paused_now.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused_now.difference_update(partitions)

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> Mapping[TopicPartition, Sequence[Any]]:
        if self.fetches:
            fetched = self.fetches.pop(0)
            if isinstance(fetched, Exception):
                raise fetched
            return fetched
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def committed(self, tp: TopicPartition) -> int | None:
        if self.committed_gate is not None:
            await self.committed_gate.wait()
        return self.group_offsets.get(tp)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))
        self.group_offsets.update(offsets)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self.seeks.append(("beginning", partitions))
        self.positions.update(dict.fromkeys(partitions, 0))

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        self.seeks.append(("end", partitions))
        self.positions.update(dict.fromkeys(partitions, self.end))

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)

    async def beginning_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)


class FakeBatch:
    """aiokafka's record batch builder, holding at most ``capacity`` records."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, *, timestamp: int | None, key: bytes | None, value: bytes | None) -> object | None:
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()


class FakeProducer:
    """Records sends (topic, key, value, partition) one by one or in batches; acknowledges them unless told
    to fail. ``partitions`` is what every topic has; ``batch_capacity`` makes batches fill up."""

    def __init__(self, fail: Exception | None = None, *, partitions: int = 3,
                 batch_capacity: int = 1000) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []
        self.batches: list[tuple[str, int, int]] = []  # (topic, partition, records) per batch sent
        self.fail = fail
        self.partitions = partitions
        self.batch_capacity = batch_capacity

    def _ack(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail is not None:
            future.set_exception(self.fail)
        else:
            future.set_result(None)
        return future

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                   partition: int | None = None) -> asyncio.Future[None]:
        self.sent.append((topic, key, value, partition))
        return self._ack()

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.batch_capacity)

    async def send_batch(self, batch: RecordBatch, topic: str, *, partition: int) -> asyncio.Future[None]:
        assert isinstance(batch, FakeBatch) and 0 <= partition < self.partitions
        self.sent.extend((topic, key, value, partition) for key, value in batch.records)
        self.batches.append((topic, partition, len(batch.records)))
        return self._ack()

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))


class HeldSink:
    """An alert sink whose acknowledgements arrive when the test resolves them, one future per batch."""

    def __init__(self) -> None:
        self.acks: list[asyncio.Future[Any]] = []
        self.sent: list[tuple[Sequence[Any], Sequence[Any]]] = []

    async def send(self, alerts: Sequence[Any], dead_letters: Sequence[Any],
                   shadow_alerts: Sequence[Any] = ()) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks.append(future)
        self.sent.append((alerts, dead_letters))
        return future
