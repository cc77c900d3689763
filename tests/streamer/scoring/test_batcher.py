import asyncio
from dataclasses import dataclass

import pytest

from streamer.scoring.batcher import Backpressure, MicroBatcher


@dataclass(eq=False)  # compared by identity: which fetch came out, not what it holds
class Fetched:
    readings: int

    def __len__(self) -> int:
        return self.readings


def fetched(n: int) -> Fetched:
    return Fetched(n)


async def test_flushes_as_soon_as_max_batch_is_reached() -> None:
    batcher: MicroBatcher[Fetched] = MicroBatcher(max_batch=5, max_wait_ms=60_000, queue_size=10)
    items = [fetched(2), fetched(3), fetched(1)]
    for item in items:
        await batcher.put(item)
    # A 60 s wait would hang the test if the size limit did not flush.
    batch = await asyncio.wait_for(batcher.next_batch(), timeout=5)
    assert batch == items[:2]
    assert batcher.qsize() == 1


async def test_flushes_after_max_wait_with_fewer() -> None:
    batcher: MicroBatcher[Fetched] = MicroBatcher(max_batch=100, max_wait_ms=5, queue_size=10)
    first, second = fetched(1), fetched(2)
    await batcher.put(first)
    await batcher.put(second)
    batch = await asyncio.wait_for(batcher.next_batch(), timeout=5)
    assert batch == [first, second]
    assert sum(len(item) for item in batch) == 3


async def test_close_drains_then_returns_empty() -> None:
    batcher: MicroBatcher[Fetched] = MicroBatcher(max_batch=100, max_wait_ms=1, queue_size=10)
    item = fetched(4)
    await batcher.put(item)
    await batcher.close()
    await batcher.close()  # idempotent
    assert await asyncio.wait_for(batcher.next_batch(), timeout=5) == [item]
    assert await asyncio.wait_for(batcher.next_batch(), timeout=5) == []
    assert await asyncio.wait_for(batcher.next_batch(), timeout=5) == []
    with pytest.raises(RuntimeError, match="closed"):
        await batcher.put(fetched(1))


async def test_close_wakes_a_waiting_consumer() -> None:
    batcher: MicroBatcher[Fetched] = MicroBatcher(max_batch=100, max_wait_ms=1, queue_size=10)
    waiter = asyncio.create_task(batcher.next_batch())
    await asyncio.sleep(0)
    await batcher.close()
    assert await asyncio.wait_for(waiter, timeout=5) == []


async def test_put_blocks_while_queue_is_full() -> None:
    batcher: MicroBatcher[Fetched] = MicroBatcher(max_batch=1, max_wait_ms=1, queue_size=2)
    await batcher.put(fetched(1))
    await batcher.put(fetched(1))
    assert batcher.qsize() == 2
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(batcher.put(fetched(1)), timeout=0.05)
    assert batcher.qsize() == 2
    # Taking a batch makes room again.
    assert len(await batcher.next_batch()) == 1
    await asyncio.wait_for(batcher.put(fetched(1)), timeout=5)
    assert batcher.qsize() == 2


async def test_counts_queued_readings_and_their_peak() -> None:
    batcher: MicroBatcher[Fetched] = MicroBatcher(max_batch=5, max_wait_ms=1, queue_size=10)
    for n in (2, 3, 4):
        await batcher.put(fetched(n))
    assert batcher.readings() == 9
    assert len(await batcher.next_batch()) == 2  # 2 + 3 reach max_batch
    assert batcher.readings() == 4
    await batcher.put(fetched(1))
    assert batcher.readings() == 5
    await batcher.next_batch()
    assert batcher.readings() == 0
    assert batcher.peak_readings == 9


async def test_full_says_when_put_would_wait() -> None:
    batcher: MicroBatcher[Fetched] = MicroBatcher(max_batch=1, max_wait_ms=1, queue_size=2)
    await batcher.put(fetched(1))
    assert not batcher.full()
    await batcher.put(fetched(1))
    assert batcher.full()


def test_backpressure_pauses_at_high_and_resumes_at_low_only() -> None:
    gate = Backpressure(high=10, low=4)
    assert [gate.update(q, full=False) for q in (0, 9, 10, 12, 5)] == [None, None, True, None, None]
    assert gate.paused
    assert gate.update(4, full=False) is False
    assert not gate.paused
    assert gate.update(9, full=False) is None  # below high again: stays running


def test_backpressure_pauses_on_a_full_queue_and_waits_for_room() -> None:
    gate = Backpressure(high=1000, low=10)
    assert gate.update(3, full=True) is True
    assert gate.update(3, full=True) is None  # below low but still full
    assert gate.update(3, full=False) is False


@pytest.mark.parametrize(("high", "low"), [(10, 10), (10, 12), (10, -1)])
def test_backpressure_rejects_marks_out_of_order(high: int, low: int) -> None:
    with pytest.raises(ValueError, match="low < high"):
        Backpressure(high=high, low=low)
