"""Scoring pauses: how long work other than scoring held the scorer while batches waited.

Every periodic or occasional job that touches all devices (snapshots,
restores, releases, the gauges) runs in bounded slices between batches;
this meter is how that promise is checked in production. Each job's time
on the scorer is one observation of ``streamer_scoring_pause_seconds``
(by cause), and ``streamer_scoring_pause_longest_seconds`` holds the longest
pause that ended in the current or the previous refresh interval, so a
scrape at least once per interval sees every interval's longest pause.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from streamer.metrics import Metrics
from streamer.vocabulary import PauseCause


class PauseMeter:
    """Observes scoring pauses (from any thread) and publishes the longest per interval."""

    def __init__(self, metrics: Metrics, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.metrics = metrics
        self.clock = clock
        self._lock = threading.Lock()
        self._current = 0.0  # longest pause that ended in this interval
        self._previous = 0.0  # ... and in the one before

    def observe(self, job: PauseCause, seconds: float) -> None:
        """``job`` held the scorer for ``seconds``."""
        self.metrics.scoring_pause.labels(job).observe(seconds)
        with self._lock:
            self._current = max(self._current, seconds)
            longest = max(self._current, self._previous)
        self.metrics.scoring_pause_longest.set(longest)

    @contextlib.contextmanager
    def hold(self, job: PauseCause) -> Iterator[None]:
        """Time the block as one pause of ``job`` (it must run where scoring would: loop or scorer)."""
        started = self.clock()
        try:
            yield
        finally:
            self.observe(job, self.clock() - started)

    def next_interval(self) -> float:
        """Start a new interval; returns the longest pause of the last two (what the gauge shows)."""
        with self._lock:
            self._previous, self._current = self._current, 0.0
            longest = self._previous
        self.metrics.scoring_pause_longest.set(longest)
        return longest
