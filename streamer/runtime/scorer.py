"""Where device state is touched: batches and state jobs, one thread at a time.

Snapshots, restores and releases always run on the scoring thread (however
long they take, the event loop keeps serving heartbeats); batches are scored
there too with ``runtime.scoring: thread``, else on the event loop, but only
while the scoring thread is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

from streamer.runtime.pauses import PauseMeter
from streamer.vocabulary import PauseCause

T = TypeVar("T")
P = ParamSpec("P")


class Scorer:
    """Runs scoring and state jobs so that one thread at a time touches device state."""

    def __init__(self, *, inline: bool, pauses: PauseMeter, name: str = "streamer-score") -> None:
        """``inline``: score batches on the event loop whenever the scoring thread is idle.

        ``pauses`` observes how long each state job holds the scorer: batches wait that long.
        """
        self.inline = inline
        self.pauses = pauses
        self._thread = ScoringThread(name)

    def score(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Score: on the event loop (``inline``) while the scoring thread is idle, else on it.

        Only the event loop submits jobs, so a thread found idle here stays
        idle while ``fn`` runs: one thread at a time touches device state, and
        a batch scored behind a state job waits for it (jobs run in order).
        Inline, the returned future is already done (no hand-off through the
        loop's self-pipe), so awaiting it does not yield.
        """
        loop = asyncio.get_running_loop()
        if not (self.inline and self._thread.idle()):
            return loop.run_in_executor(self._thread, fn)
        future: asyncio.Future[T] = loop.create_future()
        try:
            future.set_result(fn())
        except Exception as exc:  # noqa: BLE001  # handed to the awaiting caller, as an executor does
            future.set_exception(exc)
        return future

    def run_job(self, fn: Callable[[], T], job: PauseCause) -> asyncio.Future[T]:
        """Run a device-state job other than scoring on the scoring thread, timed as a pause of ``job``.

        Batches wait behind it for as long as it runs: keep each job to a
        bounded slice of devices (``state.slice_devices``).
        """
        pauses = self.pauses

        def timed() -> T:
            with pauses.hold(job):
                return fn()

        return asyncio.get_running_loop().run_in_executor(self._thread, timed)

    def idle(self) -> bool:
        """Whether the scoring thread has finished every job handed to it."""
        return self._thread.idle()

    def shutdown(self) -> None:
        """Take no more jobs and cancel those not started (a wedged job keeps its daemon thread)."""
        self._thread.shutdown(wait=False, cancel_futures=True)


class ScoringThread(Executor):
    """A single-thread executor whose thread is a daemon thread.

    ``ThreadPoolExecutor`` joins its threads when the interpreter exits, so
    a scorer wedged inside a model call would keep the process alive after
    the daemon gave up on it: the zombie the commit-stall check exists to
    end. Jobs run one at a time, in submission order.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._unfinished = 0  # submitted jobs that have not finished running (or been cancelled)

    def idle(self) -> bool:
        """Whether every submitted job has finished (or was cancelled before it ran)."""
        with self._lock:
            return self._unfinished == 0

    def _finished(self) -> None:
        with self._lock:
            self._unfinished -= 1

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` on the thread; its future."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule work after shutdown")
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            self._jobs.put((future, functools.partial(fn, *args, **kwargs)))
            self._unfinished += 1
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn = job
            if not future.set_running_or_notify_cancel():
                self._finished()
                continue
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001  # handed to the awaiting caller, as ThreadPoolExecutor does
                self._finished()
                future.set_exception(exc)
            else:
                self._finished()
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; optionally cancel what has not started and wait for the thread."""
        with self._lock:
            self._closed = True
            if cancel_futures:
                with contextlib.suppress(queue.Empty):
                    while (job := self._jobs.get_nowait()) is not None:
                        job[0].cancel()
                        self._unfinished -= 1
            self._jobs.put(None)
            thread = self._thread
        if wait and thread is not None:
            thread.join()
