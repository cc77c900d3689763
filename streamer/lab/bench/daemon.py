"""``streamer run`` in a subprocess, started as an operator starts it, and its ``/metrics`` read back.

The benchmarks time the real daemon (its fetch loop, micro-batcher, scoring
thread, publisher, commits and snapshots), so they run it exactly as
deployed: ``python -m streamer run --config FILE``. What it did is read from
its Prometheus endpoint, as an operator's dashboard would.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from streamer.config import Config, write_config_file
from streamer.embedded_broker import free_port
from streamer.lab.bench.machine import process_cpu_seconds

log = logging.getLogger(__name__)

# Readings the daemon is done with: scored, taken into state during warm-up, or dead-lettered.
HANDLED_COUNTERS = ("streamer_readings_scored_total", "streamer_readings_warmup_total",
                    "streamer_readings_rejected_total")
EVENT_TO_ALERT = "streamer_event_to_alert_seconds"
EVENT_TO_DECISION = "streamer_event_to_decision_seconds"
CONSUME_TO_DECISION = "streamer_consume_to_decision_seconds"
SCORING_PAUSE = "streamer_scoring_pause_seconds"  # by cause: read summed over causes
SNAPSHOT_ROUND = "streamer_state_snapshot_round_seconds"
RESTORE = "streamer_state_restore_seconds"
HISTOGRAMS = (EVENT_TO_ALERT, EVENT_TO_DECISION, CONSUME_TO_DECISION, SCORING_PAUSE, SNAPSHOT_ROUND, RESTORE)
LONGEST_PAUSE = "streamer_scoring_pause_longest_seconds"
# What a progress sample reads. The benchmarks sample every 0.1 s, some 150 times as often as
# Prometheus scrapes; rendering and serving the whole exposition (19 KB) that often took about 5%
# of a draining daemon's samples (py-spy), so progress samples ask for these series only
# (prometheus_client's `name[]` filter) and the full exposition is read at window edges.
PROGRESS_SERIES = (*HANDLED_COUNTERS, "streamer_readings_consumed_total", "streamer_partitions_assigned",
                   "streamer_rebalances_total", "streamer_alerts_total", LONGEST_PAUSE)
SCRAPE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts of one Prometheus histogram (``+Inf`` last)."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]

    def minus(self, earlier: Histogram) -> Histogram:
        """The observations made since ``earlier``.

        >>> Histogram((1.0, math.inf), (3.0, 5.0)).minus(Histogram((1.0, math.inf), (1.0, 1.0))).cumulative
        (2.0, 4.0)
        """
        return Histogram(self.bounds, tuple(a - b for a, b in zip(self.cumulative, earlier.cumulative,
                                                                   strict=True)))

    @property
    def count(self) -> float:
        """Observations in the histogram."""
        return self.cumulative[-1] if self.cumulative else 0.0

    def above(self, bound: float) -> float:
        """Observations greater than ``bound`` (one of the bucket bounds).

        >>> Histogram((0.02, 0.1, math.inf), (7.0, 9.0, 10.0)).above(0.02)
        3.0
        """
        return self.count - self.cumulative[self.bounds.index(bound)]

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile, interpolated linearly inside its bucket as PromQL's histogram_quantile.

        Above the highest finite bound it answers that bound; None with no observations.

        >>> Histogram((1.0, 2.0, math.inf), (1.0, 4.0, 4.0)).quantile(0.5)
        1.3333333333333333
        """
        total = self.count
        if total <= 0:
            return None
        rank = q * total
        below, lower = 0.0, 0.0
        for bound, cumulative in zip(self.bounds, self.cumulative, strict=True):
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            below, lower = cumulative, bound
        return lower


@dataclass(frozen=True)
class Sample:
    """One scrape of a daemon's metrics, with the CPU it had used by then."""

    at: float  # time.monotonic() of the scrape
    handled: float  # scored + warm-up + rejected readings
    consumed: float
    scored: float
    assigned: float  # input partitions owned
    rebalances: float
    alerts: float  # alert events acknowledged
    cpu_s: float | None  # user + system CPU seconds of the process
    histograms: dict[str, Histogram] = field(default_factory=dict)
    longest_pause_s: float = 0.0  # the longest scoring pause of the last two refresh intervals
    pauses_by_cause: dict[str, Histogram] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)  # every other sample, summed over its labels


def _histogram(counts: dict[float, float]) -> Histogram:
    bounds = sorted(counts)
    return Histogram(tuple(bounds), tuple(counts[b] for b in bounds))


def parse_metrics(text: str, *, at: float, cpu_s: float | None) -> Sample:
    """The figures the benchmarks read from one ``/metrics`` exposition."""
    values: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    by_cause: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_bucket") and family.name == SCORING_PAUSE:
                by_cause.setdefault(sample.labels["cause"], {})[float(sample.labels["le"])] = sample.value
            if sample.name.endswith("_bucket") and family.name in HISTOGRAMS:
                # Summed over any other label (the pause histogram's cause).
                counts = buckets.setdefault(family.name, {})
                bound = float(sample.labels["le"])
                counts[bound] = counts.get(bound, 0.0) + sample.value
            else:  # counters summed over their labels (reason, event, method)
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    histograms = {name: _histogram(counts) for name, counts in buckets.items()}
    return Sample(
        at=at,
        handled=sum(values.get(name, 0.0) for name in HANDLED_COUNTERS),
        consumed=values.get("streamer_readings_consumed_total", 0.0),
        scored=values.get("streamer_readings_scored_total", 0.0),
        assigned=values.get("streamer_partitions_assigned", 0.0),
        rebalances=values.get("streamer_rebalances_total", 0.0),
        alerts=values.get("streamer_alerts_total", 0.0),
        cpu_s=cpu_s,
        histograms=histograms,
        longest_pause_s=values.get(LONGEST_PAUSE, 0.0),
        pauses_by_cause={cause: _histogram(counts) for cause, counts in by_cause.items()},
        values=values,
    )


def scrape_endpoint(port: int, *, cpu_s: float | None, histograms: bool = True) -> Sample:
    """One :class:`Sample` from the metrics endpoint on loopback ``port``.

    Without ``histograms`` only :data:`PROGRESS_SERIES` are asked for.

    Raises:
        OSError: The endpoint did not answer.
    """
    at = time.monotonic()
    query = "" if histograms else "?" + urllib.parse.urlencode([("name[]", name) for name in PROGRESS_SERIES])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics{query}",  # loopback http
                                timeout=SCRAPE_TIMEOUT_S) as response:
        body: bytes = response.read()
    return parse_metrics(body.decode("utf-8"), at=at, cpu_s=cpu_s)


class DaemonFailedError(RuntimeError):
    """The daemon exited, or never became ready; the message ends with its log."""


class DaemonProcess:
    """One ``streamer run`` process with its own config file, log file and metrics port."""

    def __init__(self, config: Config, workdir: Path, name: str = "daemon") -> None:
        self.name = name
        self.port = free_port()
        metrics = msgspec.structs.replace(config.metrics, enabled=True, host="127.0.0.1", port=self.port)
        self.config = msgspec.structs.replace(config, metrics=metrics)
        self.config_path = workdir / f"{name}.json"
        self.log_path = workdir / f"{name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """Process id (the daemon must have been started)."""
        if self._process is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._process.pid

    def start(self) -> None:
        """Write the config (JSON is valid YAML) and start the process."""
        write_config_file(self.config, self.config_path)
        self._log = self.log_path.open("ab")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        self._process = subprocess.Popen(  # noqa: S603  # our own interpreter running our own CLI
            [sys.executable, "-m", "streamer", "run", "--config", str(self.config_path)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def _get(self, path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}",  # loopback http
                                    timeout=SCRAPE_TIMEOUT_S) as response:
            return int(response.status), response.read()

    def ready(self) -> bool:
        """Whether ``/readyz`` answers 200 (the daemon has a partition assignment)."""
        try:
            status, _ = self._get("/readyz")
        except OSError:
            return False
        return status == 200

    def check_alive(self) -> None:
        """Raise if the process has exited.

        Raises:
            DaemonFailedError: It has; the message ends with its log.
        """
        if self._process is not None and self._process.poll() is not None:
            raise DaemonFailedError(f"{self.name} exited with code {self._process.returncode}\n"
                                    f"{self.log_tail()}")

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until ready.

        Raises:
            DaemonFailedError: It exited or was not ready in time.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if self.ready():
                return
            time.sleep(0.1)
        raise DaemonFailedError(f"{self.name} not ready after {timeout_s:.0f} s\n{self.log_tail()}")

    def scrape(self, *, histograms: bool = True) -> Sample:
        """Read ``/metrics`` now (without ``histograms``: only :data:`PROGRESS_SERIES`, cheaper).

        Raises:
            DaemonFailedError: The process has exited.
            OSError: The endpoint did not answer.
        """
        self.check_alive()
        return scrape_endpoint(self.port, cpu_s=process_cpu_seconds(self.pid), histograms=histograms)

    def freeze(self) -> None:
        """Stop the process where it is (SIGSTOP): it consumes nothing until :meth:`thaw`."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen process run again (SIGCONT)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL after ``timeout_s``; the exit code (None: never started)."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a frozen process cannot handle SIGTERM
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", self.name, timeout_s)
                process.kill()
                process.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return process.returncode

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the daemon's log."""
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""


def cpu_percent(first: Sample | float | None, last: Sample | float | None, seconds: float) -> float | None:
    """CPU used between two readings of a process's CPU seconds, as a percentage of one core.

    >>> cpu_percent(1.0, 2.5, 1.0)
    150.0
    """
    a = first.cpu_s if isinstance(first, Sample) else first
    b = last.cpu_s if isinstance(last, Sample) else last
    if a is None or b is None or seconds <= 0:
        return None
    return round(100.0 * (b - a) / seconds, 1)


def span_rate(samples: Sequence[tuple[float, float]], total: float, *, low: float = 0.1,
              high: float = 0.9) -> float | None:
    """Readings per second while a backlog of ``total`` drains, from ``(time, count done)`` samples.

    Measured between the first sample at or past ``low * total`` and the
    last at or below ``high * total``: the start (group join, first fetches)
    and the tail (the last partitions finishing alone) are left out. With too
    few samples inside that span, from the last sample without progress (or
    the first) to the last sample.

    >>> span_rate([(0.0, 0), (1.0, 10), (2.0, 50), (3.0, 90), (4.0, 100)], 100)
    40.0
    >>> span_rate([(0.0, 0), (0.5, 0), (1.0, 100)], 100)
    200.0
    """
    if total <= 0 or len(samples) < 2:
        return None
    inside = [s for s in samples if low * total <= s[1] <= high * total]
    if len(inside) >= 2 and inside[-1][0] > inside[0][0]:
        first, last = inside[0], inside[-1]
    else:  # a short drain: from the last sample without progress (or the first) to the end
        idle = [i for i, s in enumerate(samples) if s[1] <= 0]
        first, last = samples[idle[-1] if idle else 0], samples[-1]
        if last[0] <= first[0] or last[1] <= first[1]:
            return None
    return (last[1] - first[1]) / (last[0] - first[0])
