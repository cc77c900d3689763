"""The scorer: one thread at a time touches device state; the scoring thread is a daemon thread."""

from __future__ import annotations

import asyncio
import operator
import threading

import pytest

from streamer.metrics import Metrics
from streamer.runtime.pauses import PauseMeter
from streamer.runtime.scorer import Scorer, ScoringThread


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


@pytest.mark.parametrize(("inline", "thread_name"), [(True, "MainThread"), (False, "streamer-score")])
async def test_device_state_is_touched_on_one_thread_inline_or_on_the_scoring_thread(
    inline: bool, thread_name: str,
) -> None:
    scorer = Scorer(inline=inline, pauses=PauseMeter(Metrics()))
    ran_on: list[str] = []

    def job() -> int:
        ran_on.append(threading.current_thread().name)
        return 7

    future = scorer.score(job)
    # On the event loop the job has already run: awaiting it cannot interleave other tasks.
    assert future.done() is inline
    assert await future == 7

    def fail() -> None:
        raise ValueError("model crashed")

    with pytest.raises(ValueError, match="model crashed"):
        await scorer.score(fail)
    assert ran_on == [thread_name]
    scorer.shutdown()


async def test_a_batch_is_scored_behind_a_state_job_still_running_on_the_thread() -> None:
    # Scoring inline (runtime.scoring=event_loop), but a snapshot or restore holds
    # the scoring thread: scoring inline now would touch device state from two threads.
    scorer = Scorer(inline=True, pauses=PauseMeter(Metrics()))
    release = threading.Event()
    order: list[tuple[str, str]] = []

    def state_job() -> None:
        release.wait(30)
        order.append(("state job", threading.current_thread().name))

    def score() -> None:
        order.append(("score", threading.current_thread().name))

    job = scorer.run_job(state_job, "snapshot")
    scored = scorer.score(score)
    assert not scored.done()
    release.set()
    await asyncio.gather(job, scored)
    assert order == [("state job", "streamer-score"), ("score", "streamer-score")]
    assert scorer.idle()
    await scorer.score(score)
    assert order[-1] == ("score", "MainThread")
    scorer.shutdown()


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


