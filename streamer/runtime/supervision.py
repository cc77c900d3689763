"""Supervision: the liveness watchdog, the broker probe, and the gauges over all devices.

No zombies: the daemon stops with exit code 1 (after failing ``/healthz``)
when the brokers have not answered for ``kafka.unreachable_timeout_s``, or
when records have waited ``runtime.commit_stall_timeout_s`` without a single
commit advancing (a wedged scorer, commits that keep failing). A scoring
thread is a daemon thread, so a scorer wedged in a model call does not keep
the process alive after that; a scorer wedged on the event loop blocks the
watchdog task too, so :class:`~streamer.loop_guard.LoopGuard` watches from
its own thread and ends the process.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import TopicPartition

from streamer.config import Config
from streamer.endpoints import Health
from streamer.errors import StreamerError
from streamer.kafka.clients import broker_answers
from streamer.metrics import Metrics
from streamer.runtime.commits import CommitProtocol
from streamer.runtime.pauses import PauseMeter
from streamer.runtime.seams import Consumer
from streamer.scoring.pipeline import ScoringPipeline

# Consecutive failing watchdog ticks before a daemon that is not live stops.
LIVENESS_FAILED_TICKS = 2
# Watchdog period for event-loop lag and the liveness heartbeat.
WATCHDOG_INTERVAL_S = 0.5


class Supervisor:
    """Loops that watch the daemon rather than do its work."""

    def __init__(self, consumer: Consumer, *, config: Config, health: Health, metrics: Metrics,
                 pipeline: ScoringPipeline, commits: CommitProtocol, pauses: PauseMeter) -> None:
        self.consumer = consumer
        self.pauses = pauses
        self.config = config
        self.health = health
        self.metrics = metrics
        self.pipeline = pipeline
        self.commits = commits

    async def watchdog(self) -> None:
        """Beat the liveness heartbeat; raise once the daemon is not live (it then exits non-zero)."""
        loop = asyncio.get_running_loop()
        failing = 0
        while True:
            expected = loop.time() + WATCHDOG_INTERVAL_S
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            self.metrics.loop_lag.set(max(0.0, loop.time() - expected))
            self.health.beat()
            live, why = self.health.live()
            failing = 0 if live else failing + 1
            # /healthz has failed since the condition arose. Stop on the second
            # failing tick, not the first, so a probe (the kubelet, systemd's
            # timer) has at least one watchdog interval to see the failure;
            # then stop rather than hold partitions as a zombie.
            if failing >= LIVENESS_FAILED_TICKS:
                raise StreamerError(f"not live: {why}")

    async def probe_brokers(self) -> None:
        """Ask the brokers a small question every few seconds; each answer counts as contact.

        The probe asks the leader of input partition 0 for its log start
        offset (a ListOffsets request): cheap, and answered only by a broker
        that serves the input topic.
        """
        kafka = self.config.kafka
        interval = min(5.0, max(0.25, kafka.unreachable_timeout_s / 6))
        timeout = max(1.0, kafka.unreachable_timeout_s / 3)
        tp = TopicPartition(kafka.input_topic, 0)
        while True:
            if await broker_answers(self.consumer, tp, timeout):
                self.health.contact()
                self.metrics.broker_contact.set(time.time())
            await asyncio.sleep(interval)

    async def refresh_gauges(self) -> None:
        """Device, warm-up, episode, lag and longest-pause gauges every ``metrics.refresh_interval_s``."""
        warmup = self.pipeline.warmup
        while True:
            registry = self.pipeline.registry
            # On the event loop, between batches: vectorised counts (under a
            # millisecond at a million devices; benchmarks/performance.md).
            with self.pauses.hold("gauges"):
                self.metrics.devices.set(len(registry))
                self.metrics.devices_warming.set(registry.warming_up(warmup))
                self.metrics.episodes_open.set(self.pipeline.episodes.open_count())
            self.report_lag()
            self.pauses.next_interval()
            await asyncio.sleep(self.config.metrics.refresh_interval_s)

    def report_lag(self) -> None:
        """Records behind the high watermark, per assigned partition, from its finished offset."""
        consumer = self.consumer
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            progress = self.commits.progress(tp)
            if progress is None:
                continue
            position = progress.finished if progress.finished is not None else progress.committed
            if position is None:
                continue
            self.metrics.lag.labels(str(tp.partition)).set(max(0, highwater - position))
