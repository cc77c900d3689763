"""Ends the process when its event loop is wedged and the daemon is not live.

The daemon's watchdog task stops a daemon that is not live, but that task
runs on the event loop. When the loop itself is blocked (a model call that
never returns while batches are scored on the event loop, a blocking call
made by mistake) the task never runs, and the process would hold its
partitions as a zombie: the probes see 503 (the HTTP server has its own
thread) but nothing ends it. This thread watches the loop's heartbeat from
outside and exits the process, with status 1, once the loop has missed its
beats and the daemon has stayed not live for ``failed_ticks`` ticks. A slow
but moving loop (a long snapshot, a big restore) is left alone: the daemon is
still live then.

Exiting from a thread cannot run the graceful path (it needs the loop), so
the process ends at once; nothing is lost that was committed, and what was
not is replayed by the partitions' next owner.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from streamer.endpoints import Health

log = logging.getLogger(__name__)

# A loop that has not beaten for this many watchdog intervals is not running.
MISSED_BEATS = 2


def exit_process(why: str) -> None:
    """Log why, flush the log handlers and end the process with status 1."""
    log.critical("event loop wedged and the daemon is not live (%s): exiting", why)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(1)


class LoopGuard:
    """A daemon thread that ends the process when the event loop is wedged and not live."""

    def __init__(self, health: Health, *, interval_s: float, failed_ticks: int,
                 on_wedged: Callable[[str], None] = exit_process) -> None:
        self.health = health
        self.interval_s = interval_s
        self.failed_ticks = failed_ticks
        self.on_wedged = on_wedged
        self.failing = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="streamer-loop-guard", daemon=True)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (returns without waiting for the thread's tick)."""
        self._stopped.set()

    def tick(self, now: float | None = None) -> bool:
        """One check; True when it called ``on_wedged``."""
        now = time.monotonic() if now is None else now
        loop_quiet = now - self.health.last_beat > MISSED_BEATS * self.interval_s
        live, why = self.health.live()
        self.failing = self.failing + 1 if loop_quiet and not live else 0
        if self.failing >= self.failed_ticks:
            self.on_wedged(why)
            return True
        return False

    def _watch(self) -> None:
        while not self._stopped.wait(self.interval_s):
            if self.tick():
                return
