"""The fetcher: offset resets to the configured end, counted and logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError

from tests.fakes import FakeConsumer, offline_config
from tests.streamer.runtime.parts import TP0, TP1, Parts, build


async def run_until(parts: Parts, done: Callable[[], bool]) -> None:
    task = asyncio.create_task(parts.fetcher.run())
    try:
        for _ in range(500):
            if done():
                return
            assert not task.done(), task.exception()
            await asyncio.sleep(0.01)
        pytest.fail("the fetch loop never reset the partition")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_out_of_range_fetch_resets_to_the_policy_counts_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = FakeConsumer([TP0, TP1])
    consumer.fetches.append(OffsetOutOfRangeError({TP1: 1000}))
    parts = build(offline_config(kafka={"auto_offset_reset": "earliest"}), consumer)
    with caplog.at_level(logging.WARNING, logger="streamer.runtime.fetcher"):
        await run_until(parts, lambda: bool(consumer.seeks))
    assert consumer.seeks == [("beginning", (TP1,))]
    assert parts.sample("streamer_offset_resets_total", reason="out_of_range") == 1
    assert "partition 1: offset 1000 is out of range; reset to the earliest offset 0" in caplog.text


async def test_partition_without_committed_offset_starts_at_the_policy_end() -> None:
    consumer = FakeConsumer([TP0, TP1], end=7)
    consumer.fetches.append(NoOffsetForPartitionError(TP0))
    parts = build(offline_config(kafka={"auto_offset_reset": "latest"}), consumer)
    await run_until(parts, lambda: bool(consumer.seeks))
    assert consumer.seeks == [("end", (TP0,))]
    assert parts.sample("streamer_offset_resets_total", reason="no_committed_offset") == 1
    assert parts.sample("streamer_offset_resets_total", reason="out_of_range") == 0


async def test_a_position_beyond_the_log_end_is_reset_once_it_persists() -> None:
    consumer = FakeConsumer([TP0], end=5)
    consumer.highwaters[TP0] = 5
    consumer.positions[TP0] = 9  # the broker answers this fetch with nothing, as Tansu does
    clock = SteppingClock()
    parts = build(offline_config(kafka={"auto_offset_reset": "latest"}), consumer)
    parts.fetcher.clock = clock
    parts.commits.activate(TP0, 9)
    await parts.fetcher.check_beyond_end()
    assert consumer.seeks == []  # not yet: the high watermark may lag after a leader change
    clock.now += 10.0
    await parts.fetcher.check_beyond_end()
    assert consumer.seeks == [("end", (TP0,))]
    assert parts.sample("streamer_offset_resets_total", reason="out_of_range") == 1


class SteppingClock:
    def __init__(self) -> None:
        self.now = 100.0

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def monotonic(self) -> float:
        return self.now
