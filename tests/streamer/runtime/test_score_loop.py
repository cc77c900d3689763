"""The score loop and the commit protocol: batches scored while acknowledgements wait, finished in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import cast

import numpy as np
import numpy.typing as npt
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


class SlicedState:
    """A state manager's snapshot seams: three changed devices, one per slice, each take slow."""

    slice_devices = 1

    def __init__(self) -> None:
        self.taken: list[dict[int, int]] = []
        self.written: list[dict[int, int]] = []

    async def changed(self, partitions: object) -> npt.NDArray[np.intp]:
        return np.arange(3)

    def take(self, positions: dict[int, int], candidates: object) -> object:
        self.taken.append(dict(positions))
        time.sleep(0.05)  # on the scoring thread: a batch queued meanwhile waits for this slice only
        return SimpleNamespace(values=[b"row"], positions=dict(positions))

    async def write(self, taken: SimpleNamespace) -> None:
        self.written.append(taken.positions)


async def test_a_snapshot_round_scores_batches_between_slices_and_writes_each_after_its_acks(
    held: Parts,
) -> None:
    acks = held.sink.acks
    await held.batcher.put(held.fetched(0))
    await until(lambda: len(acks) == 1, "the first batch was not scored")
    state = SlicedState()
    snapshot = asyncio.create_task(held.commits.snapshot([TP0], cast(StateManager, state), held.scorer))
    await until(lambda: len(state.taken) == 1 or snapshot.done(), "no slice was taken")
    await held.batcher.put(held.fetched(3))  # arrives while the first slice is being taken
    await until(lambda: len(state.taken) == 3 or snapshot.done(), "the round did not go on")
    assert len(acks) == 2  # the second batch was scored between two slices ...
    assert state.taken == [{0: 3}, {0: 6}, {0: 6}]  # ... and later slices are stamped after it
    await asyncio.sleep(0.05)
    assert state.written == []  # state ahead of the finished offsets is not written
    acks[0].set_result([])
    await until(lambda: len(state.written) == 1, "the first slice was not written after its batch's acks")
    assert state.written == [{0: 3}]
    assert not snapshot.done()
    acks[1].set_result([])
    await asyncio.wait_for(snapshot, 5)
    assert state.written == [{0: 3}, {0: 6}, {0: 6}]
    await held.commits.commit()
    assert held.consumer.commits == [{TP0: 6}]  # the commit covers every stamp written


async def test_records_of_a_partition_revoked_while_queued_are_not_scored(held: Parts) -> None:
    held.commits.deactivate(TP0)
    held.score_loop.busy()
    await held.batcher.put(held.fetched(0))
    await until(held.score_loop.idle, "the batch was not dropped")
    assert held.sink.acks == []
    assert held.sample("streamer_readings_warmup_total") == 0


async def test_a_spread_round_paces_its_slices_until_an_urgent_round_makes_it_hurry(held: Parts) -> None:
    await held.batcher.put(held.fetched(0))
    await until(lambda: len(held.sink.acks) == 1, "the batch was not scored")
    held.sink.acks[0].set_result([])
    state = SlicedState()
    spread = asyncio.create_task(held.commits.snapshot([TP0], cast(StateManager, state), held.scorer,
                                                       spread_s=60.0))
    await until(lambda: len(state.written) == 1, "the first slice was not written")
    await asyncio.sleep(0.2)
    assert len(state.taken) == 1  # the next slice is 20 s away
    # A revoke or shutdown asks for a round now: the spread one stops pacing, then the urgent one runs.
    urgent = asyncio.create_task(held.commits.snapshot([TP0], cast(StateManager, state), held.scorer))
    await asyncio.wait_for(asyncio.gather(spread, urgent), 5)
    assert len(state.written) == 3 + 3  # this fake's devices stay changed: the urgent round takes them again
