"""The daemon's own seams without a broker: offset resets, the scoring thread, the logged config."""

from __future__ import annotations

import asyncio
import logging
import operator
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import msgspec
import numpy as np
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError, NoOffsetForPartitionError, OffsetOutOfRangeError

from streamer.app import Daemon, Fetched, ScoringThread
from streamer.codec import encode_reading
from streamer.config import MASK, Config, load_config
from streamer.embedded_broker import free_port
from streamer.kafka.clients import PartitionPauses
from streamer.kafka.publisher import Publisher
from streamer.lab.bench.fleet import WireRecord
from streamer.metrics import Metrics
from streamer.state.manager import StateManager

TP0, TP1 = TopicPartition("readings", 0), TopicPartition("readings", 1)


def config(batching: dict[str, object] | None = None, **kafka: object) -> Config:
    base = load_config(None, environ={})
    return msgspec.structs.replace(
        base,
        batching=msgspec.structs.replace(base.batching, **(batching or {})),
        kafka=msgspec.structs.replace(base.kafka, **kafka),
        predictor=msgspec.structs.replace(base.predictor, kind="baseline"),
        metrics=msgspec.structs.replace(base.metrics, enabled=False),
    )


class ResettingConsumer:
    """Raises one position error from ``getmany``, then records where it is told to seek."""

    def __init__(self, error: Exception, end: int = 42) -> None:
        self.error: Exception | None = error
        self.end = end
        self.seeks: list[tuple[str, tuple[TopicPartition, ...]]] = []
        self.positions: dict[TopicPartition, int] = {}

    def assignment(self) -> set[TopicPartition]:
        return {TP0, TP1}

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[object]]:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self.seeks.append(("beginning", partitions))
        self.positions.update(dict.fromkeys(partitions, 0))

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        self.seeks.append(("end", partitions))
        self.positions.update(dict.fromkeys(partitions, self.end))

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


async def run_fetch_loop_until(daemon: Daemon, done: Callable[[], bool]) -> None:
    task = asyncio.create_task(daemon._fetch_loop())
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
    daemon = Daemon(config(auto_offset_reset="earliest"), metrics=Metrics())
    consumer = ResettingConsumer(OffsetOutOfRangeError({TP1: 1000}))
    daemon._consumer = consumer
    with caplog.at_level(logging.WARNING, logger="streamer.app"):
        await run_fetch_loop_until(daemon, lambda: bool(consumer.seeks))
    assert consumer.seeks == [("beginning", (TP1,))]
    registry = daemon.metrics.registry
    assert registry.get_sample_value("streamer_offset_resets_total", {"reason": "out_of_range"}) == 1
    assert "partition 1: offset 1000 is out of range; reset to the earliest offset 0" in caplog.text


async def test_partition_without_committed_offset_starts_at_the_policy_end() -> None:
    daemon = Daemon(config(auto_offset_reset="latest"), metrics=Metrics())
    consumer = ResettingConsumer(NoOffsetForPartitionError(TP0), end=7)
    daemon._consumer = consumer
    await run_fetch_loop_until(daemon, lambda: bool(consumer.seeks))
    assert consumer.seeks == [("end", (TP0,))]
    registry = daemon.metrics.registry
    assert registry.get_sample_value("streamer_offset_resets_total", {"reason": "no_committed_offset"}) == 1
    assert registry.get_sample_value("streamer_offset_resets_total", {"reason": "out_of_range"}) == 0


async def test_scoring_thread_runs_jobs_in_order_on_one_daemon_thread() -> None:
    executor = ScoringThread("test-score")
    loop = asyncio.get_running_loop()
    seen: list[tuple[int, str, bool]] = []

    def job(n: int) -> int:
        thread = threading.current_thread()
        seen.append((n, thread.name, thread.daemon))
        return n * n

    results = await asyncio.gather(*(loop.run_in_executor(executor, job, n) for n in range(5)))
    assert results == [0, 1, 4, 9, 16]
    assert seen == [(n, "test-score", True) for n in range(5)]

    def fail() -> None:
        raise ValueError("model crashed")

    with pytest.raises(ValueError, match="model crashed"):
        await loop.run_in_executor(executor, fail)
    executor.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="shutdown"):
        executor.submit(job, 1)


def test_scoring_thread_shutdown_cancels_jobs_that_have_not_started() -> None:
    executor = ScoringThread("test-score")
    release = threading.Event()
    started = threading.Event()

    def wedged() -> None:
        started.set()
        release.wait(30)

    running = executor.submit(wedged)
    started.wait(30)
    queued = executor.submit(lambda: 1)
    executor.shutdown(wait=False, cancel_futures=True)  # returns although a job is wedged
    assert queued.cancelled()
    assert not running.done()
    release.set()
    assert running.result(30) is None


async def test_start_up_log_masks_the_sasl_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "predictor:\n  kind: baseline\nmetrics:\n  enabled: false\n"
        f"kafka:\n  bootstrap_servers: 127.0.0.1:{free_port()}\n  request_timeout_ms: 2000\n"
        "  security:\n    protocol: SASL_PLAINTEXT\n    sasl_mechanism: PLAIN\n    sasl_username: svc\n",
        encoding="utf-8")
    loaded = load_config(path, environ={"STREAMER__KAFKA__SECURITY__SASL_PASSWORD": "hunter2-secret"})
    with caplog.at_level(logging.DEBUG):
        exit_code = await Daemon(loaded, metrics=Metrics()).run()  # nothing listens: fails at start
    assert exit_code == 1
    effective = [r.getMessage() for r in caplog.records if "effective configuration" in r.getMessage()]
    assert len(effective) == 1
    assert f'"sasl_password":"{MASK}"' in effective[0]
    assert '"sasl_username":"svc"' in effective[0]
    assert "hunter2-secret" not in caplog.text


class SlowRestoreConsumer:
    """A consumer whose committed-offset lookup (the start of a takeover) waits for ``release``."""

    def __init__(self) -> None:
        self.assigned: set[TopicPartition] = set()
        self.paused_now: set[TopicPartition] = set()
        self.release = asyncio.Event()

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_now)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused_now.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused_now.difference_update(partitions)

    async def committed(self, tp: TopicPartition) -> int | None:
        await self.release.wait()
        return None


class Readings:
    """Stands in for a fetched batch: the batcher only needs its size."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


async def test_backpressure_never_resumes_a_partition_whose_state_is_being_restored() -> None:
    daemon = Daemon(config(batching={"max_batch": 10, "queue_size": 8, "pause_high": 20, "pause_low": 5}),
                    metrics=Metrics())
    consumer = SlowRestoreConsumer()
    daemon._consumer = consumer
    daemon._pauses = PartitionPauses(consumer)
    consumer.assigned = {TP0, TP1}
    daemon.on_assigned([TP0, TP1])  # takeover starts and waits in committed()
    assert consumer.paused() == {TP0, TP1}
    for _ in range(2):
        await daemon.batcher.put(cast(Fetched, Readings(10)))
    daemon._apply_backpressure()  # 20 queued: pause everything
    assert daemon.backpressure.paused
    await daemon.batcher.next_batch()
    await daemon.batcher.next_batch()
    daemon._apply_backpressure()  # 0 queued: backpressure lifts
    assert not daemon.backpressure.paused
    assert consumer.paused() == {TP0, TP1}  # still restoring
    registry = daemon.metrics.registry
    assert registry.get_sample_value("streamer_partitions_paused", {"reason": "restore"}) == 2
    assert registry.get_sample_value("streamer_partitions_paused", {"reason": "backpressure"}) == 0
    assert registry.get_sample_value("streamer_backpressure_pauses_total") == 1
    consumer.release.set()
    assert daemon._takeover is not None
    await asyncio.wait_for(daemon._takeover, 5)
    assert consumer.paused() == set()
    assert daemon._active == {TP0, TP1}
    assert registry.get_sample_value("streamer_partitions_paused", {"reason": "restore"}) == 0


@pytest.mark.parametrize(("scoring", "thread_name"),
                         [("event_loop", "MainThread"), ("thread", "streamer-score")])
async def test_device_state_is_touched_on_one_thread_chosen_by_runtime_scoring(
    scoring: str, thread_name: str,
) -> None:
    base = config()
    runtime = msgspec.structs.replace(base.runtime, scoring=scoring)
    daemon = Daemon(msgspec.structs.replace(base, runtime=runtime))
    ran_on: list[str] = []

    def job() -> int:
        ran_on.append(threading.current_thread().name)
        return 7

    future = daemon._on_scorer(job)
    # On the event loop the job has already run: awaiting it cannot interleave other tasks.
    assert future.done() is (scoring == "event_loop")
    assert await future == 7

    def fail() -> None:
        raise ValueError("model crashed")

    with pytest.raises(ValueError, match="model crashed"):
        await daemon._on_scorer(fail)
    assert ran_on == [thread_name]
    await daemon._close()


async def test_a_batch_is_scored_behind_a_state_job_still_running_on_the_thread() -> None:
    # runtime.scoring=event_loop, but a snapshot or restore holds the scoring
    # thread: scoring inline now would touch device state from two threads.
    base = config()
    runtime = msgspec.structs.replace(base.runtime, scoring="event_loop")
    daemon = Daemon(msgspec.structs.replace(base, runtime=runtime))
    release = threading.Event()
    order: list[tuple[str, str]] = []

    def state_job() -> None:
        release.wait(30)
        order.append(("state job", threading.current_thread().name))

    def score() -> None:
        order.append(("score", threading.current_thread().name))

    job = daemon._on_state_job(state_job)
    scored = daemon._on_scorer(score)
    assert not scored.done()
    release.set()
    await asyncio.gather(job, scored)
    assert order == [("state job", "streamer-score"), ("score", "streamer-score")]
    assert daemon._executor.idle()
    await daemon._on_scorer(score)
    assert order[-1] == ("score", "MainThread")
    await daemon._close()


def test_scoring_thread_counts_unfinished_jobs_including_failed_and_cancelled_ones() -> None:
    executor = ScoringThread("test-score")
    assert executor.idle()
    release = threading.Event()
    running = executor.submit(release.wait, 30)
    failing = executor.submit(operator.truediv, 1, 0)
    assert not executor.idle()
    release.set()
    assert running.result(30) is True
    with pytest.raises(ZeroDivisionError):
        failing.result(30)
    assert executor.idle()
    blocker = threading.Event()
    executor.submit(blocker.wait, 30)
    queued = executor.submit(lambda: 1)
    executor.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    blocker.set()
    executor.shutdown(wait=True)
    assert executor.idle()


# --------------------------------------------------------------- unacknowledged batches
class HeldPublisher:
    """A publisher whose acknowledgements arrive when the test resolves them, one future per batch."""

    def __init__(self) -> None:
        self.acks: list[asyncio.Future[Any]] = []

    async def send(self, alerts: object, dead_letters: object) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks.append(future)
        return future


def fetched(daemon: Daemon, offset: int, count: int = 3) -> Fetched:
    """``count`` readings of one device on TP0 starting at ``offset``."""
    records = [WireRecord(TP0.topic, 0, offset + i, b"pump-1",
                          encode_reading("pump-1", 1_700_000_000_000 + (offset + i) * 1000, 1.0), 0)
               for i in range(count)]
    return Fetched(records, daemon.decoder.decode(records), {TP0: offset + count},
                   np.zeros(count, dtype=np.int32))


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.005)
    pytest.fail(what)


@pytest.fixture
async def held_daemon() -> AsyncIterator[tuple[Daemon, HeldPublisher]]:
    batching: dict[str, object] = {"max_unacked_batches": 2, "max_batch": 3, "max_wait_ms": 0.0}
    daemon = Daemon(config(batching=batching), metrics=Metrics())
    publisher = HeldPublisher()
    daemon._publisher = cast(Publisher, publisher)
    daemon._active = {TP0}
    loops = [asyncio.create_task(daemon._score_loop()), asyncio.create_task(daemon._ack_loop())]
    yield daemon, publisher
    for loop in loops:
        loop.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    await daemon._close()


async def test_batches_are_scored_while_earlier_acks_wait_and_done_in_fetch_order(
        held_daemon: tuple[Daemon, HeldPublisher]) -> None:
    daemon, publisher = held_daemon
    for batch in range(3):
        await daemon.batcher.put(fetched(daemon, 3 * batch))
    # Two batches scored and sent without any acknowledgement; the third waits for room.
    await until(lambda: len(publisher.acks) == 2, "two batches were not scored")
    await asyncio.sleep(0.05)
    assert len(publisher.acks) == 2
    assert daemon._done == {} and not daemon._idle.is_set()
    publisher.acks[1].set_result([])  # the second is acknowledged first: nothing is done yet
    await asyncio.sleep(0.05)
    assert daemon._done == {}
    assert len(publisher.acks) == 2  # its room is freed only when it is done, after the first
    publisher.acks[0].set_result([])
    await until(lambda: daemon._done.get(TP0) == 6, "the first two batches were not marked done")
    await until(lambda: len(publisher.acks) == 3, "the third batch was not scored")
    assert not daemon._idle.is_set()
    publisher.acks[2].set_result([])
    await until(lambda: daemon._done.get(TP0) == 9, "the third batch was not marked done")
    assert daemon._idle.is_set()
    assert daemon.metrics.registry.get_sample_value("streamer_readings_warmup_total") == 9


async def test_a_failed_acknowledgement_keeps_it_and_later_batches_uncommitted(
        held_daemon: tuple[Daemon, HeldPublisher]) -> None:
    daemon, publisher = held_daemon
    for batch in range(2):
        await daemon.batcher.put(fetched(daemon, 3 * batch))
    await until(lambda: len(publisher.acks) == 2, "two batches were not scored")
    publisher.acks[1].set_result([])
    publisher.acks[0].set_exception(KafkaTimeoutError())
    await asyncio.sleep(0.05)
    assert daemon._done == {}
    assert daemon._state_torn  # state holds both batches: never snapshot it


async def test_a_snapshot_waits_for_scored_batches_to_be_acknowledged(
        held_daemon: tuple[Daemon, HeldPublisher]) -> None:
    daemon, publisher = held_daemon
    await daemon.batcher.put(fetched(daemon, 0))
    await until(lambda: len(publisher.acks) == 1, "the batch was not scored")
    taken: list[dict[int, int]] = []

    class State:
        def take(self, positions: dict[int, int]) -> object:
            taken.append(positions)
            return SimpleNamespace(values=[])

        async def write(self, snapshot: object) -> None:
            return None

    daemon.state = cast(StateManager, State())
    snapshot = asyncio.create_task(daemon.snapshot([TP0]))
    await asyncio.sleep(0.05)
    assert not snapshot.done()  # state is ahead of the finished offsets until the acks arrive
    publisher.acks[0].set_result([])
    await asyncio.wait_for(snapshot, 5)
    assert taken == [{0: 3}]
