"""``streamer bench scaleout``: 1, 2, 4 ... daemon processes in one consumer group on one topic.

For each process count, that many ``streamer run`` processes start together
in a fresh group on a fresh, empty topic (``partitions`` partitions, so every
count divides them evenly by default). Once the group is stable (every
process owns partitions, together all of them), the processes are frozen
(SIGSTOP), the backlog of the synthetic fleet is produced, and they are let
go (SIGCONT) together: they start on the same backlog at the same moment,
without a process that joined first draining it alone, and without the
producer competing with them for the machine. A frozen process sends no
heartbeats, so the freeze ends after :data:`FREEZE_LIMIT_S` whatever is
left to produce (the record says whether the whole backlog was produced
frozen); Tansu completes a join only after about half the session timeout,
so raising the timeout instead would slow every phase.

Every process is sampled at the same moments; rates are taken over the
*stable window*: every process owns partitions, together they own all of
them, no rebalance happens, and every process still has work.

The broker and the daemons share one machine, so the record says where the CPU went (each daemon, the
broker, the total against the machine's cores) and names what bounds the
total (see :func:`bound`).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from streamer.config import Config
from streamer.kafka.clients import ensure_topics
from streamer.lab.bench.daemon import DaemonProcess, Sample, cpu_percent
from streamer.lab.bench.fleet import SignalFleet
from streamer.lab.bench.load import LoadGenerator, make_load_producer
from streamer.lab.bench.machine import load_average, machine_record
from streamer.lab.bench.runs import (
    BenchFailedError,
    Broker,
    Drain,
    Progress,
    bench_config,
    run_id,
    scrape,
    wait_handled,
)

BACKLOG_INTERVAL_MS = 1_000
# Frozen processes send no heartbeats: thaw them well within the session timeout (10 s by default).
FREEZE_LIMIT_S = 5.0
# The group is stable once its assignment has not changed for this long.
STABLE_FOR_S = 1.5
# A process is out of work once it has handled this share of its part of the backlog.
DONE_SHARE = 0.95
# The machine counts as saturated when the processes together use this share of its cores.
SATURATED_SHARE = 0.85
# A daemon counts as held to one core at this share of a core (one interpreter lock:
# its event loop, and its scoring thread where it has one).
ONE_CORE_SHARE = 0.8


@dataclass(frozen=True)
class ScaleoutOptions:
    """What ``streamer bench scaleout`` runs."""

    processes: tuple[int, ...] = (1, 2, 4)
    devices: int = 12_000
    backlog_steps: int = 200
    partitions: int = 12
    seed: int = 7
    ready_timeout_s: float = 120.0
    drain_timeout_s: float = 600.0


FULL = ScaleoutOptions()
QUICK = ScaleoutOptions(backlog_steps=80)


def options_from(quick: bool, **overrides: Any) -> ScaleoutOptions:
    """QUICK or FULL with the given fields replaced (None leaves a field as it is)."""
    base = QUICK if quick else FULL
    return replace(base, **{name: value for name, value in overrides.items() if value is not None})


async def run_scaleout(base: Config, options: ScaleoutOptions, broker: Broker, workdir: Path,
                       progress: Progress) -> dict[str, Any]:
    """Run every process count against ``broker`` and return the JSON object."""
    started = time.monotonic()
    record: dict[str, Any] = {"benchmark": "scaleout", **machine_record(), "broker": broker.description,
                              "cores": os.cpu_count()}
    phases = []
    for count in options.processes:
        progress(f"{count} process(es): backlog of {options.devices * options.backlog_steps:,} readings")
        phase = await _phase(base, options, broker, workdir, count, progress)
        phases.append(phase)
        progress(f"  total {phase['total_per_s'] or 0:,.0f} readings/s; per process "
                 f"{', '.join(f'{r:,.0f}' for r in phase['per_process_per_s'])}; {phase['bound']}")
    single = next((p["total_per_s"] for p in phases if p["processes"] == 1), None)
    for phase in phases:
        phase["scaling_vs_one"] = (round(phase["total_per_s"] / single, 3)
                                   if single and phase["total_per_s"] else None)
    record.update({"phases": phases, "options": asdict(options), "load_average_end": load_average(),
                   "seconds": round(time.monotonic() - started, 1)})
    return record


async def _phase(base: Config, options: ScaleoutOptions, broker: Broker, workdir: Path, count: int,
                 progress: Progress) -> dict[str, Any]:
    config = bench_config(base, broker, run=run_id(), partitions=options.partitions)
    kafka = config.kafka
    await ensure_topics(kafka, [kafka.input_topic, kafka.alert_topic, kafka.dead_letter_topic])
    channels = list(config.readings.channels)
    daemons = [DaemonProcess(config, workdir, f"scaleout-{count}-{i}") for i in range(count)]
    producer = make_load_producer(kafka)
    try:
        for daemon in daemons:
            daemon.start()
        await wait_stable(daemons, options.partitions, timeout_s=options.ready_timeout_s)
        progress(f"  group of {count} stable; frozen while the backlog is produced")
        await producer.start()
        generator = LoadGenerator(producer, kafka.input_topic,
                                  SignalFleet(options.devices, channels=len(channels), seed=options.seed),
                                  partitions=options.partitions, channels=channels)
        backlog, frozen = await _produce_frozen(daemons, generator, options.backlog_steps)
        drain = await wait_handled(daemons, backlog, timeout_s=options.drain_timeout_s,
                                   broker_pid=broker.pid)
    finally:
        await producer.stop()
        exit_codes = [daemon.stop() for daemon in daemons]
    return {"processes": count, "backlog_readings": backlog, "backlog_produced_frozen": frozen,
            **summarise(drain, options.partitions), "exit_codes": exit_codes}


async def _produce_frozen(daemons: list[DaemonProcess], generator: LoadGenerator,
                          steps: int) -> tuple[int, bool]:
    """Produce the backlog with the daemons frozen (for at most FREEZE_LIMIT_S); (readings, all frozen)."""
    end_ms = int(time.time() * 1000)
    frozen = True
    for daemon in daemons:
        daemon.freeze()
    started = time.monotonic()
    try:
        for step in range(steps):
            await generator.send(generator.fleet.devices, end_ms - (steps - step) * BACKLOG_INTERVAL_MS)
            if frozen and time.monotonic() - started > FREEZE_LIMIT_S:
                frozen = False
                await generator.flush()
                for daemon in daemons:
                    daemon.thaw()
        await generator.flush()
    finally:
        for daemon in daemons:
            daemon.thaw()
    return steps * generator.fleet.devices, frozen


async def wait_stable(daemons: list[DaemonProcess], partitions: int, *, timeout_s: float) -> None:
    """Wait until the group's assignment covers every partition, every process has some, and it holds.

    Raises:
        BenchFailedError: Not stable within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    since: float | None = None
    last: list[float] = []
    while time.monotonic() < deadline:
        try:
            samples = await asyncio.gather(*(scrape(daemon, histograms=False) for daemon in daemons))
        except OSError:  # an endpoint is not up yet
            samples = []
        assigned = [s.assigned for s in samples]
        state = [*assigned, *(s.rebalances for s in samples)]
        if samples and min(assigned) > 0 and sum(assigned) == partitions:
            if state != last:
                since, last = time.monotonic(), state
            elif since is not None and time.monotonic() - since >= STABLE_FOR_S:
                return
        else:
            since, last = None, []
        await asyncio.sleep(0.25)
    raise BenchFailedError(f"{len(daemons)} daemons did not settle into one group within {timeout_s:.0f} s")


def stable_window(series: list[list[Sample]], partitions: int, *, done_share: float = DONE_SHARE,
                  ) -> tuple[int, int] | None:
    """First and last sample index of the longest stretch in which the group is stable and busy.

    Stable: every process owns partitions, together all ``partitions``, and
    no process's rebalance count changes. Busy: no process has yet handled
    ``done_share`` of what it handles in the whole drain (a process whose
    partitions are done would idle while the others finish).
    """
    moments = len(series[0]) if series else 0
    finals = [history[-1].handled for history in series]

    def settled(k: int) -> bool:
        assigned = [history[k].assigned for history in series]
        return min(assigned) > 0 and sum(assigned) == partitions

    def busy(k: int) -> bool:
        return all(history[k].handled < done_share * final for history, final in zip(series, finals,
                                                                                      strict=True))

    best: tuple[int, int] | None = None
    k = 0
    while k < moments:
        if not (settled(k) and busy(k)):
            k += 1
            continue
        start = k
        rebalances = [history[k].rebalances for history in series]
        end = k
        while (end + 1 < moments and settled(end + 1) and busy(end + 1)
               and [history[end + 1].rebalances for history in series] == rebalances):
            end += 1
        if end > start and (best is None or end - start > best[1] - best[0]):
            best = (start, end)
        k = end + 1
    return best


def drain_span(totals: list[float]) -> tuple[int, int]:
    """Samples that bracket the drain: the last before any progress, the first with all of it.

    Cumulative counts sampled more coarsely than a small drain lasts must
    still bracket it, or the rate over the span comes out as zero.

    >>> drain_span([0, 0, 0, 600, 600, 600])
    (2, 3)
    >>> drain_span([0, 100, 400, 600, 600])
    (0, 3)
    >>> drain_span([5])
    (0, 0)
    """
    if len(totals) < 2:
        return 0, len(totals) - 1
    start = max(k for k, total in enumerate(totals) if total == totals[0])
    end = min(k for k, total in enumerate(totals) if total >= totals[-1])
    if end <= start:  # no progress at all within the samples
        return 0, len(totals) - 1
    return start, end


def summarise(drain: Drain, partitions: int) -> dict[str, Any]:
    """Rates and CPU per process and in total over the stable window (or the whole drain)."""
    series = drain.series
    window = stable_window(series, partitions)
    if window is not None and all(h[window[1]].handled == h[window[0]].handled for h in series):
        window = None  # stable but idle: the whole drain fell between two samples
    stable = window is not None
    if window is None:  # e.g. a small backlog drained within a few samples
        window = drain_span([sum(h[k].handled for h in series) for k in range(len(series[0]))])
    first, last = window
    seconds = series[0][last].at - series[0][first].at
    per_process = [round((h[last].handled - h[first].handled) / seconds, 1) if seconds > 0 else 0.0
                   for h in series]
    daemon_cpu = [cpu_percent(h[first], h[last], seconds) for h in series]
    broker_cpu = cpu_percent(drain.broker_cpu_s[first], drain.broker_cpu_s[last], seconds)
    machine_cpu = cpu_percent(drain.machine_busy_s[first], drain.machine_busy_s[last], seconds)
    return {
        "total_per_s": round(sum(per_process), 1) if seconds > 0 else None,
        "per_process_per_s": per_process,
        "stable_window": stable,
        "window_s": round(seconds, 2),
        "partitions_per_process": [int(h[first].assigned) for h in series],
        "daemon_cpu_percent": daemon_cpu,
        "broker_cpu_percent": broker_cpu,
        "machine_cpu_percent": machine_cpu,
        "bound": bound(daemon_cpu, broker_cpu, os.cpu_count() or 1, machine_cpu),
    }


def bound(daemon_cpu: list[float | None], broker_cpu: float | None, cores: int,
          machine_cpu: float | None = None) -> str:
    """What limits the total, from where the CPU went.

    ``machine_cpu`` is every process's CPU over the window (the machine is
    shared: what the daemons and the broker did not use, others may have).

    >>> bound([95.0, 96.0], 8.0, 2)
    'CPU: the machine is saturated (daemons 191%, broker 8% of 200%)'
    >>> bound([45.0, 47.0], 8.0, 2, machine_cpu=196.0)
    'CPU: the machine is saturated (daemons 92%, broker 8%, other processes 96% of 200%)'
    >>> bound([97.0], 20.0, 4)
    'one core per daemon: each daemon process is held to about one core (97%)'
    >>> bound([40.0], 10.0, 4)
    'not CPU: the daemons wait (on the broker, fetches or acknowledgements)'
    """
    daemons = sum(c for c in daemon_cpu if c is not None)
    broker = broker_cpu or 0.0
    ours = daemons + broker
    busy = max(ours, machine_cpu or 0.0)
    if busy >= SATURATED_SHARE * 100.0 * cores:
        others = f", other processes {busy - ours:.0f}%" if busy - ours >= 1.0 else ""
        return (f"CPU: the machine is saturated (daemons {daemons:.0f}%, broker {broker:.0f}%{others} "
                f"of {100 * cores}%)")
    known = [c for c in daemon_cpu if c is not None]
    if known and min(known) >= ONE_CORE_SHARE * 100.0:
        return (f"one core per daemon: each daemon process is held to about one core "
                f"({min(known):.0f}%)")
    return "not CPU: the daemons wait (on the broker, fetches or acknowledgements)"
