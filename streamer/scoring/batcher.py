"""Micro-batching between the fetch loop and the scorer, and the backpressure on it.

Fetched batches queue up (bounded, so a slow scorer stops the fetch loop
instead of growing memory); the scorer takes everything queued, waiting up
to ``max_wait_ms`` after the first item for more, and flushes as soon as
``max_batch`` readings are in hand.

The queue is the last line of defence. The first is :class:`Backpressure`:
the daemon pauses its partitions once too many readings are queued and
resumes them when the scorer has caught up, so the fetch loop keeps polling
(a consumer that stops polling for ``max_poll_interval_ms`` is thrown out of
its group) while nothing more is fetched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sized
from typing import Generic, TypeVar

T = TypeVar("T", bound=Sized)


class MicroBatcher(Generic[T]):
    """Bounded queue of fetched batches (sized by readings) with size-or-time flushing."""

    def __init__(self, *, max_batch: int, max_wait_ms: float, queue_size: int) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self._queue: asyncio.Queue[T | None] = asyncio.Queue(queue_size)
        self._closed = False
        self._readings = 0
        self.peak_readings = 0  # most readings ever queued at once

    def qsize(self) -> int:
        """Fetched batches waiting."""
        return self._queue.qsize()

    def readings(self) -> int:
        """Readings waiting (the sum of the queued batches' sizes)."""
        return self._readings

    def full(self) -> bool:
        """Whether the next ``put`` would wait."""
        return self._queue.full()

    async def put(self, item: T) -> None:
        """Queue a fetched batch; waits while the queue is full (backpressure)."""
        if self._closed:
            raise RuntimeError("batcher is closed")
        await self._queue.put(item)
        self._readings += len(item)
        self.peak_readings = max(self.peak_readings, self._readings)

    async def close(self) -> None:
        """No more puts; ``next_batch`` returns what is left, then ``[]``."""
        if not self._closed:
            self._closed = True
            await self._queue.put(None)

    async def next_batch(self) -> list[T]:
        """The next micro-batch; ``[]`` once closed and drained."""
        first = await self._queue.get()
        if first is None:
            self._queue.put_nowait(None)  # keep the close marker for later callers
            return []
        batch = [first]
        size = len(first)
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if item is None:
                self._queue.put_nowait(None)
                break
            batch.append(item)
            size += len(item)
        self._readings -= size
        return batch


class Backpressure:
    """Hysteresis between two marks: pause at ``high`` queued readings, resume at ``low``.

    Also pauses when the queue is full by count of batches (many small
    fetches), so the fetch loop never has to wait on ``put``.

    >>> gate = Backpressure(high=100, low=40)
    >>> gate.update(99, full=False), gate.update(100, full=False), gate.update(60, full=False)
    (None, True, None)
    >>> gate.update(40, full=False), gate.paused
    (False, False)
    """

    def __init__(self, *, high: int, low: int) -> None:
        if not 0 <= low < high:
            raise ValueError(f"need 0 <= low < high, got low={low} high={high}")
        self.high = high
        self.low = low
        self.paused = False

    def update(self, queued: int, *, full: bool) -> bool | None:
        """Feed the queue's state; True: pause now, False: resume now, None: no change."""
        if not self.paused and (queued >= self.high or full):
            self.paused = True
            return True
        if self.paused and queued <= self.low and not full:
            self.paused = False
            return False
        return None
