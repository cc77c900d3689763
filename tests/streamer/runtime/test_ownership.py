"""Partition ownership: takeover pauses a new assignment until its state is in place."""

from __future__ import annotations

import asyncio
from typing import cast

from streamer.runtime.batches import Fetched
from tests.fakes import FakeConsumer, offline_config
from tests.streamer.runtime.parts import TP0, TP1, build


class Readings:
    """Stands in for a fetched batch: the batcher only needs its size."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


async def test_backpressure_never_resumes_a_partition_whose_state_is_being_restored() -> None:
    consumer = FakeConsumer([TP0, TP1])
    consumer.committed_gate = asyncio.Event()  # the takeover waits in committed()
    parts = build(offline_config(batching={"max_batch": 10, "queue_size": 8, "pause_high": 20,
                                           "pause_low": 5}), consumer)
    parts.ownership.on_assigned([TP0, TP1])
    assert consumer.paused() == {TP0, TP1}
    for _ in range(2):
        await parts.batcher.put(cast(Fetched, Readings(10)))
    parts.fetcher.apply_backpressure()  # 20 queued: pause everything
    await parts.batcher.next_batch()
    await parts.batcher.next_batch()
    parts.fetcher.apply_backpressure()  # 0 queued: backpressure lifts
    assert consumer.paused() == {TP0, TP1}  # still restoring
    assert parts.sample("streamer_partitions_paused", reason="restore") == 2
    assert parts.sample("streamer_partitions_paused", reason="backpressure") == 0
    assert parts.sample("streamer_backpressure_pauses_total") == 1
    consumer.committed_gate.set()
    await asyncio.wait_for(parts.ownership.taken_over(), 5)
    assert consumer.paused() == set()
    assert set(parts.commits.active) == {TP0, TP1}
    assert parts.sample("streamer_partitions_paused", reason="restore") == 0


async def test_a_revoke_commits_what_is_finished_and_a_partition_back_unchanged_resumes_there() -> None:
    consumer = FakeConsumer([TP0, TP1])
    parts = build(offline_config(), consumer)
    parts.ownership.on_assigned([TP0, TP1])
    await parts.ownership.taken_over()
    for offset in (0, 3):
        parts.score_loop.busy()
        await parts.batcher.put(parts.fetched(offset))
    loops = [asyncio.create_task(parts.score_loop.run()), asyncio.create_task(parts.score_loop.acknowledge())]
    try:
        for _ in range(1000):  # acknowledge whatever was sent until everything is finished
            for ack in parts.sink.acks:
                if not ack.done():
                    ack.set_result([])
            if parts.score_loop.idle():
                break
            await asyncio.sleep(0.005)
        assert parts.score_loop.idle()
        await parts.ownership.on_revoked([TP0, TP1])
        assert consumer.commits == [{TP0: 6}]  # the revoke commits what is finished
        assert set(parts.commits.active) == set()
        consumer.assigned = {TP0}
        parts.ownership.on_assigned([TP0])  # TP0 comes back at its committed offset; TP1 moved away
        await parts.ownership.taken_over()
        assert set(parts.commits.active) == {TP0}
        assert parts.commits.finished(TP0) == 6
        assert parts.sample("streamer_rebalances_total") == 2
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        parts.scorer.shutdown()
