"""The runtime's seams: what its engines need of Kafka, of the alert sink and of the clock.

aiokafka's ``AIOKafkaConsumer`` is the :class:`Consumer` and the
:class:`OffsetCommitter`; :class:`streamer.kafka.publisher.Publisher` is the
:class:`AlertSink`. Tests hand the engines fakes of these instead of
reaching into them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import TopicPartition

from streamer.codec import Alert, DeadLetter, Record


class OffsetCommitter(Protocol):
    """Commits a consumer group's offsets."""

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` (the next offset to read, per partition)."""
        ...


class Consumer(OffsetCommitter, Protocol):
    """The group consumer, as the runtime uses it."""

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> Mapping[TopicPartition, Sequence[Record]]:
        """Fetched records per partition (empty after ``timeout_ms`` without any)."""
        ...

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of ``tp`` (None: never committed)."""
        ...

    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record to fetch from ``tp``."""
        ...

    def highwater(self, tp: TopicPartition) -> int | None:
        """The last known high watermark of ``tp``."""
        ...

    def assignment(self) -> set[TopicPartition]:
        """The partitions assigned now."""
        ...

    def paused(self) -> set[TopicPartition]:
        """The assigned partitions paused now."""
        ...

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop fetching ``partitions``."""
        ...

    def resume(self, *partitions: TopicPartition) -> None:
        """Fetch ``partitions`` again."""
        ...

    async def seek_to_beginning(self, *partitions: TopicPartition) -> Any:
        """Move ``partitions`` to their log start."""
        ...

    async def seek_to_end(self, *partitions: TopicPartition) -> Any:
        """Move ``partitions`` to their log end."""
        ...

    async def beginning_offsets(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        """The log start offset of each partition (a small request the broker probe asks)."""
        ...


class AlertSink(Protocol):
    """Where a scored batch's alerts and dead letters go."""

    async def send(self, alerts: Sequence[Alert],
                   dead_letters: Sequence[tuple[bytes | None, DeadLetter]],
                   shadow_alerts: Sequence[Alert] = ()) -> Awaitable[Any]:
        """Hand the records over in order; the result completes when every one is acknowledged.

        ``shadow_alerts``: the alerts of a candidate scored in shadow (to the shadow alert topic).
        """
        ...


class Clock(Protocol):
    """Wall-clock and monotonic time."""

    def time(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...


class SystemClock:
    """The process clock."""

    def time(self) -> float:
        """``time.time()``."""
        return time.time()

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()
