"""``streamer run`` processes under a tiny orchestrator: start, SIGKILL, SIGTERM, restart.

Like a Kubernetes Deployment, the pool keeps ``size`` daemons alive: a daemon
that is killed, stopped or exits on its own is restarted after a back-off.
Each process (an *incarnation* of a slot) logs to its own file; the logs are
kept, and scanned at the end for the drains and commits a daemon reported as
failed (causes of replay, see :mod:`streamer.lab.chaos.verdict`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from streamer.config import ENV_PREFIX, Config, write_config_file
from streamer.embedded_broker import free_port
from streamer.vocabulary import LogEvent

log = logging.getLogger(__name__)

Ending = Literal["sigkill", "sigterm", "crash", "stop"]

# Log events of a daemon that leave finished-but-uncommitted work to be redone
# by the next owner: a revoke or shutdown drain that timed out, a commit the
# broker refused. The daemons log JSON lines; the event names are a contract
# (streamer.vocabulary.LogEvent), the messages are not.
REPLAY_EVENTS: frozenset[LogEvent] = frozenset({"replay_pending", "commit_failed"})
# Beyond the daemon's own shutdown deadline, for the process to exit.
EXIT_MARGIN_S = 15.0
SWAPS = "streamer_model_swaps_total"


@dataclass
class Incarnation:
    """One daemon process."""

    slot: int
    number: int
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int
    ending: Ending | None = None  # set before we signal it, or when it exits on its own
    exit_code: int | None = None
    model_swaps: int = 0  # streamer_model_swaps_total{role="current"} when last read


class DaemonPool:
    """Keeps ``size`` ``streamer run`` processes of one consumer group alive."""

    def __init__(self, config: Config, size: int, workdir: Path, *, restart_delay_s: float,
                 rng: random.Random) -> None:
        self.config = config
        self.size = size
        self.workdir = workdir
        self.restart_delay_s = restart_delay_s
        self.rng = rng
        self.history: list[Incarnation] = []
        self.current: dict[int, Incarnation] = {}
        self._restarts: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        # The file is authoritative: STREAMER__* variables would override it in the children.
        self._env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        """Start every slot and watch for daemons that exit on their own."""
        for slot in range(self.size):
            self._spawn(slot)
        self._watcher = asyncio.create_task(self._watch(), name="chaos-watch")

    def _spawn(self, slot: int) -> Incarnation:
        number = sum(1 for i in self.history if i.slot == slot)
        port = free_port()
        config = msgspec.structs.replace(
            self.config, metrics=msgspec.structs.replace(self.config.metrics, port=port),
            runtime=msgspec.structs.replace(self.config.runtime, log_format="json"))
        name = f"daemon-{slot}.{number}"
        config_path = self.workdir / f"{name}.json"
        write_config_file(config, config_path)
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(  # noqa: S603  # our own CLI, fixed arguments
                [sys.executable, "-m", "streamer", "run", "--config", str(config_path)],
                stdout=log_file, stderr=subprocess.STDOUT, env=self._env)
        incarnation = Incarnation(slot, number, process, log_path, port)
        self.history.append(incarnation)
        self.current[slot] = incarnation
        log.info("started %s (pid %d)", name, process.pid)
        return incarnation

    async def wait_ready(self, timeout_s: float) -> None:
        """Until every current daemon answers ``/readyz`` (it has a partition assignment).

        Raises:
            TimeoutError: Not all were ready in time.
        """
        deadline = time.monotonic() + timeout_s
        while not all(await asyncio.gather(*(asyncio.to_thread(_ready, i.port)
                                             for i in self.current.values()))):
            if time.monotonic() > deadline:
                raise TimeoutError(f"daemons not ready within {timeout_s:.0f}s (logs in {self.workdir})")
            await asyncio.sleep(0.5)

    # ----------------------------------------------------------------- faults
    def running(self) -> list[int]:
        """Slots whose daemon is running and not being stopped."""
        return [s for s, i in self.current.items() if i.ending is None and i.process.poll() is None]

    async def kill(self, count: int = 1) -> int:
        """SIGKILL ``count`` random running daemons at once; they restart after the back-off.

        Returns:
            How many were killed.
        """
        victims = self.rng.sample(self.running(), min(count, len(self.running())))
        for slot in victims:
            incarnation = self.current[slot]
            incarnation.ending = "sigkill"
            incarnation.process.send_signal(signal.SIGKILL)
            log.info("SIGKILL daemon-%d.%d", slot, incarnation.number)
        for slot in victims:
            await self._reap(self.current[slot], EXIT_MARGIN_S)
            self._restart_later(slot)
        return len(victims)

    async def terminate(self) -> int:
        """SIGTERM one random running daemon, wait for its drain, restart it after the back-off.

        Returns:
            1 if a daemon was stopped, 0 if none was running.
        """
        running = self.running()
        if not running:
            return 0
        slot = self.rng.choice(running)
        incarnation = self.current[slot]
        incarnation.ending = "sigterm"
        incarnation.process.send_signal(signal.SIGTERM)
        log.info("SIGTERM daemon-%d.%d", slot, incarnation.number)
        await self._reap(incarnation, self.config.runtime.shutdown_timeout_s + EXIT_MARGIN_S)
        self._restart_later(slot)
        return 1

    def _restart_later(self, slot: int) -> None:
        task = asyncio.create_task(self._restart(slot), name=f"restart-{slot}")
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart(self, slot: int) -> None:
        await asyncio.sleep(self.restart_delay_s)
        if not self._stopping:
            self._spawn(slot)

    async def settle(self) -> None:
        """Wait for pending restarts."""
        while self._restarts:
            await asyncio.gather(*self._restarts, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for slot, incarnation in list(self.current.items()):
                if incarnation.ending is None and incarnation.process.poll() is not None:
                    incarnation.ending = "crash"
                    incarnation.exit_code = incarnation.process.returncode
                    log.warning("daemon-%d.%d exited on its own with code %d", slot, incarnation.number,
                                incarnation.exit_code)
                    self._restart_later(slot)

    async def _reap(self, incarnation: Incarnation, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while incarnation.process.poll() is None:
            if time.monotonic() > deadline:
                log.warning("daemon-%d.%d did not exit in %.0fs: SIGKILL", incarnation.slot,
                            incarnation.number, timeout_s)
                incarnation.process.kill()
            await asyncio.sleep(0.1)
        incarnation.exit_code = incarnation.process.returncode

    # ------------------------------------------------------------------- stop
    async def stop(self) -> None:
        """SIGTERM every daemon (graceful drain) and wait for them."""
        self._stopping = True
        await self._stop_watcher()
        live = [i for i in self.current.values() if i.process.poll() is None]
        for incarnation in live:
            incarnation.ending = "stop"
            incarnation.process.send_signal(signal.SIGTERM)
        await asyncio.gather(*(self._reap(i, self.config.runtime.shutdown_timeout_s + EXIT_MARGIN_S)
                               for i in live))

    def kill_all(self) -> None:
        """SIGKILL whatever still runs (cleanup after an error)."""
        self._stopping = True
        for incarnation in self.history:
            if incarnation.process.poll() is None:
                incarnation.process.kill()
                incarnation.process.wait()

    async def _stop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        for task in list(self._restarts):
            task.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)

    # ---------------------------------------------------------------- summary
    def unclean_exits(self) -> int:
        """Processes that ended with a non-zero code without being SIGKILLed."""
        return sum(1 for i in self.history if i.ending not in (None, "sigkill") and i.exit_code != 0)

    def replay_events(self) -> int:
        """Log events, over every process, that report work left to be replayed."""
        return sum(replay_events_in(incarnation.log_path.read_text(encoding="utf-8", errors="replace"))
                   for incarnation in self.history)

    async def read_swaps(self) -> None:
        """Read each running daemon's count of model swaps (runs with swaps; metrics die with a process)."""
        live = [i for i in self.current.values() if i.process.poll() is None]
        counts = await asyncio.gather(*(asyncio.to_thread(_swaps, i.port) for i in live))
        for incarnation, count in zip(live, counts, strict=True):
            if count is not None:
                incarnation.model_swaps = max(incarnation.model_swaps, count)

    def model_swaps(self) -> int:
        """Model swaps the daemons reported, over every process (a lower bound: see :meth:`read_swaps`)."""
        return sum(i.model_swaps for i in self.history)

    def exits(self) -> list[dict[str, object]]:
        """How each process ended."""
        return [{"daemon": f"{i.slot}.{i.number}", "ending": i.ending, "exit_code": i.exit_code}
                for i in self.history]


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _swaps(port: int) -> int | None:
    """``streamer_model_swaps_total{role="current"}`` of the daemon on ``port``; None: no answer."""
    query = urllib.parse.urlencode([("name[]", SWAPS)])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics?{query}", timeout=1) as response:
            text = response.read().decode("utf-8")
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == SWAPS and sample.labels.get("role") == "current":
                return int(sample.value)
    return 0


def replay_events_in(log: str) -> int:
    """JSON log lines of ``log`` whose ``event`` is one of :data:`REPLAY_EVENTS` (other lines are skipped).

    >>> lines = ['{"message": "x", "event": "commit_failed"}', "text: commit failed", '{"message": "y"}']
    >>> replay_events_in(chr(10).join(lines))
    1
    """
    count = 0
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and document.get("event") in REPLAY_EVENTS:
            count += 1
    return count
