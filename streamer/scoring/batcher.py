"""Micro-batching between the fetch loop and the scorer.

Fetched batches queue up (bounded, so a slow scorer stops the fetch loop
instead of growing memory); the scorer takes everything queued, waiting up
to ``max_wait_ms`` after the first item for more, and flushes as soon as
``max_batch`` readings are in hand.
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
        self._queue: asyncio.Queue[T | None] = asyncio.Queue(queue_size)
        self._closed = False

    def qsize(self) -> int:
        """Fetched batches waiting."""
        return self._queue.qsize()

    async def put(self, item: T) -> None:
        """Queue a fetched batch; waits while the queue is full (backpressure)."""
        if self._closed:
            raise RuntimeError("batcher is closed")
        await self._queue.put(item)

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
        return batch
