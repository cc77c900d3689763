"""The score loop and the commit protocol: batches scored while acknowledgements wait, finished in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import cast

import pytest
from aiokafka.errors import KafkaTimeoutError

from streamer.state.manager import StateManager
from tests.fakes import FakeConsumer, offline_config
from tests.streamer.runtime.parts import TP0, Parts, build


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.005)
    pytest.fail(what)


@pytest.fixture
async def held() -> AsyncIterator[Parts]:
    """Engines with room for two unacknowledged batches of 3 readings, TP0 active, loops running."""
    batching: dict[str, object] = {"max_unacked_batches": 2, "max_batch": 3, "max_wait_ms": 0.0}
    parts = build(offline_config(batching=batching), FakeConsumer([TP0]))
    parts.commits.activate(TP0, None)
    loops = [asyncio.create_task(parts.score_loop.run()), asyncio.create_task(parts.score_loop.acknowledge())]
    yield parts
    for loop in loops:
        loop.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    parts.scorer.shutdown()


async def test_batches_are_scored_while_earlier_acks_wait_and_finished_in_fetch_order(held: Parts) -> None:
    acks = held.sink.acks
    for batch in range(3):
        held.score_loop.busy()  # as the fetcher does on arrival
        await held.batcher.put(held.fetched(3 * batch))
    # Two batches scored and sent without any acknowledgement; the third waits for room.
    await until(lambda: len(acks) == 2, "two batches were not scored")
    await asyncio.sleep(0.05)
    assert len(acks) == 2
    assert held.commits.finished(TP0) is None and not held.score_loop.idle()
    acks[1].set_result([])  # the second is acknowledged first: nothing is finished yet
    await asyncio.sleep(0.05)
    assert held.commits.finished(TP0) is None
    assert len(acks) == 2  # its room is freed only when it is finished, after the first
    acks[0].set_result([])
    await until(lambda: held.commits.finished(TP0) == 6, "the first two batches were not finished")
    await until(lambda: len(acks) == 3, "the third batch was not scored")
    assert not held.score_loop.idle()
    acks[2].set_result([])
    await until(lambda: held.commits.finished(TP0) == 9, "the third batch was not finished")
    assert held.score_loop.idle()
    assert held.sample("streamer_readings_warmup_total") == 9
    await held.commits.commit()
    assert held.consumer.commits == [{TP0: 9}]
    await held.commits.commit()  # nothing moved: nothing to commit
    assert held.consumer.commits == [{TP0: 9}]


async def test_a_failed_acknowledgement_keeps_it_and_later_batches_uncommitted(held: Parts) -> None:
    acks = held.sink.acks
    for batch in range(2):
        await held.batcher.put(held.fetched(3 * batch))
    await until(lambda: len(acks) == 2, "two batches were not scored")
    acks[1].set_result([])
    acks[0].set_exception(KafkaTimeoutError())
    await asyncio.sleep(0.05)
    assert held.commits.finished(TP0) is None
    assert held.commits.torn  # state holds both batches: never snapshot it
    await held.commits.commit()
    assert held.consumer.commits == []


async def test_a_snapshot_waits_for_scored_batches_to_be_acknowledged(held: Parts) -> None:
    await held.batcher.put(held.fetched(0))
    await until(lambda: len(held.sink.acks) == 1, "the batch was not scored")
    taken: list[dict[int, int]] = []

    class State:
        def take(self, positions: dict[int, int]) -> object:
            taken.append(positions)
            return SimpleNamespace(values=[])

        async def write(self, snapshot: object) -> None:
            return None

    snapshot = asyncio.create_task(held.commits.snapshot([TP0], cast(StateManager, State()), held.scorer))
    await asyncio.sleep(0.05)
    assert not snapshot.done()  # state is ahead of the finished offsets until the acks arrive
    held.sink.acks[0].set_result([])
    await asyncio.wait_for(snapshot, 5)
    assert taken == [{0: 3}]


async def test_records_of_a_partition_revoked_while_queued_are_not_scored(held: Parts) -> None:
    held.commits.deactivate(TP0)
    held.score_loop.busy()
    await held.batcher.put(held.fetched(0))
    await until(held.score_loop.idle, "the batch was not dropped")
    assert held.sink.acks == []
    assert held.sample("streamer_readings_warmup_total") == 0
