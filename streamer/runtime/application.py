"""The application: wires the runtime's engines to Kafka and supervises them from start to stop.

Data flow (each stage's module in parentheses)::

    Fetcher ──(bounded MicroBatcher)──▶ ScoreLoop ──▶ Scorer ──────────▶ AlertSink ──▶ CommitProtocol
    getmany + decode    (fetcher)       micro-batch   ScoringPipeline    (publisher)   acks → finished
                                        (score_loop)  (scorer)                          offsets → commit
                                                                                        (commits)

:class:`~streamer.runtime.ownership.PartitionOwnership` follows rebalances and
moves device state with its partitions; :class:`~streamer.runtime.supervision.Supervisor`
runs the watchdog, the broker probe and the gauges. This module owns only
*when*: start-up, the periodic commit and snapshot, the graceful drain on
SIGTERM, and closing the clients within ``runtime.shutdown_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Collection
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from models.registry import BundleRegistry
from streamer.codec import ReadingDecoder
from streamer.config import Config, log_effective_config
from streamer.endpoints import Health, HealthServer
from streamer.kafka.clients import (
    PartitionPauses,
    ensure_copartitioned_topic,
    ensure_state_topic,
    ensure_topics,
    make_consumer,
    make_feedback_consumer,
    make_producer,
    partition_count,
)
from streamer.kafka.publisher import Publisher
from streamer.logs import event
from streamer.loop_guard import LoopGuard
from streamer.metrics import Metrics
from streamer.runtime.batches import Fetched
from streamer.runtime.commits import CommitProtocol
from streamer.runtime.feedback import FeedbackConsumer, FeedbackFollower, feedback_group
from streamer.runtime.fetcher import Fetcher
from streamer.runtime.models import ModelFollower
from streamer.runtime.ownership import PartitionOwnership
from streamer.runtime.pauses import PauseMeter
from streamer.runtime.score_loop import ScoreLoop
from streamer.runtime.scorer import Scorer
from streamer.runtime.seams import AlertSink, Consumer
from streamer.runtime.supervision import LIVENESS_FAILED_TICKS, WATCHDOG_INTERVAL_S, Supervisor
from streamer.scoring.batcher import Backpressure, MicroBatcher
from streamer.scoring.pipeline import ScoringPipeline
from streamer.state.manager import StateManager

log = logging.getLogger(__name__)

# How often to commit finished offsets: often enough that a restart replays
# little, rarely enough not to load the group coordinator.
COMMIT_INTERVAL_S = 1.0
# Share of state.snapshot_interval_s over which a periodic round's slices are spread.
SNAPSHOT_SPREAD = 0.5
# Of the shutdown budget (runtime.shutdown_timeout_s), the share spent
# finishing queued work; the rest is kept for the snapshot, the commit and
# closing the clients, so the whole shutdown fits the budget.
DRAIN_FRACTION = 0.6
# No shutdown step gets less than this, even when the budget is spent: a
# last commit attempt is worth a small overrun.
MIN_STEP_S = 0.5


@dataclass(frozen=True)
class Engines:
    """The engines that need the clients, wired together."""

    fetcher: Fetcher
    score_loop: ScoreLoop
    ownership: PartitionOwnership
    supervisor: Supervisor
    feedback: FeedbackFollower | None
    models: ModelFollower | None


class Application:
    """Consumes readings, scores them and publishes alerts until stopped."""

    def __init__(self, config: Config, *, metrics: Metrics | None = None,
                 pipeline: ScoringPipeline | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.pipeline = pipeline or ScoringPipeline(config)
        readings = config.readings
        self.decoder = ReadingDecoder(readings.channels, device_id_pattern=readings.device_id_pattern,
                                      max_message_bytes=readings.max_message_bytes,
                                      max_future_ms=readings.max_future_ms)
        self.health = Health(stall_after_s=max(10.0, config.kafka.session_timeout_ms / 1000.0),
                             unreachable_after_s=config.kafka.unreachable_timeout_s,
                             commit_stall_after_s=config.runtime.commit_stall_timeout_s)
        batching = config.batching
        self.batcher: MicroBatcher[Fetched] = MicroBatcher(
            max_batch=batching.max_batch, max_wait_ms=batching.max_wait_ms, queue_size=batching.queue_size)
        high, low = batching.pause_marks()
        self.backpressure = Backpressure(high=high, low=low)
        self.pauses = PauseMeter(self.metrics)
        self.scorer = Scorer(inline=not config.runtime.scores_on_thread(config.predictor), pauses=self.pauses)
        self.commits = CommitProtocol(self.metrics, self.health,
                                      max_unacked_batches=batching.max_unacked_batches)
        self._loop_guard = LoopGuard(self.health, interval_s=WATCHDOG_INTERVAL_S,
                                     failed_ticks=LIVENESS_FAILED_TICKS)
        self._stop = asyncio.Event()
        self._shutdown_deadline: float | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self._feedback_consumer: Any = None
        self.state: StateManager | None = None
        self.engines: Engines | None = None  # once the clients exist (build_engines)
        self.http: HealthServer | None = None
        self.exit_code = 0

    @property
    def consumer(self) -> Consumer | None:
        """The group consumer, once started."""
        consumer: Consumer | None = self._consumer
        return consumer

    # ----------------------------------------------------------------- lifecycle
    def request_stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler)."""
        if not self._stop.is_set():
            log.info("stop requested: draining")
            self.health.ready = False
            self._stop.set()

    async def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        config = self.config
        log_effective_config(config)
        log.info("scoring on %s", "the event loop" if self.scorer.inline else "a scoring thread")
        self.metrics.batch_capacity.set(config.batching.max_batch)
        self.metrics.set_build(predictor=config.predictor.kind,
                               model_version=self.pipeline.predictor.version,
                               method=self.pipeline.threshold.method)
        if config.metrics.enabled:
            self.http = HealthServer(self.metrics.registry, self.health, config.metrics.host,
                                     config.metrics.port)
            self.http.start()
        kafka = config.kafka
        try:
            topics = [kafka.input_topic, kafka.alert_topic, kafka.dead_letter_topic]
            lstm = config.predictor.lstm
            if config.predictor.kind == "lstm" and lstm.registry is not None and lstm.shadow.enabled:
                topics.append(kafka.shadow_alert_topic)
            await ensure_topics(kafka, topics)
            self.health.contact()
            self._producer = make_producer(kafka)
            await self._producer.start()
            publisher = Publisher(self._producer, kafka.alert_topic, kafka.dead_letter_topic,
                                  kafka.shadow_alert_topic)
            partitions = await partition_count(self._producer, kafka.input_topic)
            if config.feedback.enabled:
                await ensure_copartitioned_topic(
                    kafka, kafka.feedback_topic, partitions, compacted=False,
                    why="a device's feedback must be in the partition numbered like its readings'")
                self._feedback_consumer = make_feedback_consumer(
                    kafka, group_id=feedback_group(kafka.group_id), max_records=config.batching.max_batch)
                await self._feedback_consumer.start()
            if config.state.enabled:
                await ensure_state_topic(kafka, kafka.state_topic_name(), partitions)
                self.state = StateManager(self.pipeline, config, producer=self._producer,
                                          run=self.scorer.run_job, metrics=self.metrics)
                log.info("device state: %s (%d bytes per device, fingerprint %s)",
                         kafka.state_topic_name(), self.state.schema.row_bytes,
                         self.state.schema.fingerprint)
            self._consumer = make_consumer(kafka, max_records=config.batching.max_batch)
            engines = self.build_engines(self._consumer, publisher, self._feedback_consumer)
            # Subscribe after start: start() would otherwise wait for the first
            # assignment, unwatched, for as long as the group cannot be joined.
            await self._consumer.start()
            self._consumer.subscribe([kafka.input_topic], listener=engines.ownership.listener())
            log.info("consuming %s as group %s from %s", kafka.input_topic, kafka.group_id,
                     kafka.bootstrap_servers)
            await self._serve(engines)
        except Exception as exc:
            log.exception("daemon failed")
            self.health.fatal = str(exc)
            self.exit_code = 1
        finally:
            await self._close()
        return self.exit_code

    def build_engines(self, consumer: Consumer, sink: AlertSink,
                      feedback_consumer: FeedbackConsumer | None = None) -> Engines:
        """Wire the engines that need the clients to this application's pipeline, scorer and commits.

        ``run`` calls it with the group consumer, the publisher and (with
        ``feedback.enabled``) the feedback consumer; tests call it with fakes
        of the seams, so they drive the same wiring.
        """
        config, metrics = self.config, self.metrics
        self.commits.committer = consumer
        pauses = PartitionPauses(consumer)
        feedback = None
        if feedback_consumer is not None:
            feedback = FeedbackFollower(feedback_consumer, config=config, pipeline=self.pipeline,
                                        scorer=self.scorer, gate=self.commits, sink=sink, metrics=metrics,
                                        snapshots=self.state is not None)
            self.commits.round_watchers.append(feedback)
        score_loop = ScoreLoop(pipeline=self.pipeline, batcher=self.batcher, scorer=self.scorer,
                               commits=self.commits, sink=sink, decoder=self.decoder, metrics=metrics,
                               on_batch_taken=lambda: fetcher.apply_backpressure())
        fetcher = Fetcher(consumer, config=config, decoder=self.decoder, batcher=self.batcher,
                          backpressure=self.backpressure, pauses=pauses, commits=self.commits,
                          metrics=metrics, on_fetched=score_loop.busy)
        ownership = PartitionOwnership(
            consumer, config=config, pauses=pauses, commits=self.commits, scorer=self.scorer,
            state=self.state, registry=self.pipeline.registry, metrics=metrics, health=self.health,
            wait_idle=score_loop.wait_idle, stopping=self._stop.is_set, report_pauses=fetcher.report_pauses,
            feedback=feedback)
        supervisor = Supervisor(consumer, config=config, health=self.health, metrics=metrics,
                                pipeline=self.pipeline, commits=self.commits, pauses=self.pauses)
        models = None
        registry = config.predictor.lstm.registry
        if config.predictor.kind == "lstm" and registry is not None:
            models = ModelFollower(BundleRegistry(registry), config=config, pipeline=self.pipeline,
                                   scorer=self.scorer, gate=self.commits, metrics=metrics, state=self.state)
        self.engines = Engines(fetcher, score_loop, ownership, supervisor, feedback, models)
        return self.engines

    async def _serve(self, engines: Engines) -> None:
        fetcher, score_loop, ownership, supervisor, feedback = (
            engines.fetcher, engines.score_loop, engines.ownership, engines.supervisor, engines.feedback)
        # The liveness clocks start now: joining the group is not a stall.
        self.health.contact()
        self.health.progressed()
        self.health.beat()  # start-up (model load, topic checks) is not a stalled loop
        self._loop_guard.start()
        fetch = asyncio.create_task(fetcher.run(), name="fetch")
        score = asyncio.create_task(score_loop.run(), name="score")
        acks = asyncio.create_task(score_loop.acknowledge(), name="acks")
        # Ends the daemon (with an error) once it is no longer live.
        watchdog = asyncio.create_task(supervisor.watchdog(), name="watchdog")
        helpers = [
            asyncio.create_task(self._commit_loop(fetcher), name="commit"),
            asyncio.create_task(supervisor.refresh_gauges(), name="gauges"),
            asyncio.create_task(supervisor.probe_brokers(), name="broker-probe"),
        ]
        if self.state is not None:
            helpers.append(asyncio.create_task(self._snapshot_loop(), name="snapshots"))
        if feedback is not None:
            helpers.append(asyncio.create_task(feedback.run(), name="feedback"))
        if engines.models is not None:
            helpers.append(asyncio.create_task(engines.models.run(), name="models"))
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait({fetch, score, acks, watchdog, stop},
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stop}:
                task.result()  # a loop that ended on its own failed: raise its error
            # Graceful drain: stop fetching, score what is queued, commit.
            budget = self.config.runtime.shutdown_timeout_s
            self._shutdown_deadline = time.monotonic() + budget
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetch
            await ownership.cancel_takeover()
            await self.batcher.close()
            try:
                await asyncio.wait_for(asyncio.gather(score, acks), budget * DRAIN_FRACTION)
            except TimeoutError:
                log.error(  # noqa: TRY400  # a timeout's traceback says nothing
                    "drain did not finish within %.1fs; uncommitted work will be replayed",
                    budget * DRAIN_FRACTION, extra=event("replay_pending"))
                self.exit_code = 1
            else:
                # aiokafka calls no revoke listener on stop: hand the state over here.
                if feedback is not None:
                    await self._bounded(feedback.unfollow([tp.partition for tp in self.commits.active]),
                                        "stopping feedback")
                await self._bounded(self.snapshot(list(self.commits.active)), "final snapshot")
        finally:
            if self._shutdown_deadline is None:  # failed: the budget starts now
                self._shutdown_deadline = time.monotonic() + self.config.runtime.shutdown_timeout_s
            await ownership.cancel_takeover()
            for task in (fetch, score, acks, watchdog, stop, *helpers):
                task.cancel()
            await asyncio.gather(fetch, score, acks, watchdog, stop, *helpers, return_exceptions=True)
            # Only finished work is ever marked finished, so committing it is
            # right even when a loop failed: less to replay for the next owner.
            await self._bounded(self.commits.commit(), "final commit")
            if feedback is not None:
                await self._bounded(feedback.commit(), "final feedback commit")

    async def _bounded(self, step: Awaitable[Any], what: str) -> None:
        """Await a shutdown step within what is left of the shutdown budget (brokers may be gone)."""
        deadline = self._shutdown_deadline
        left = MIN_STEP_S if deadline is None else max(MIN_STEP_S, deadline - time.monotonic())
        try:
            await asyncio.wait_for(step, left)
        except TimeoutError:
            log.warning("%s did not finish within %.1fs; skipped", what, left)
            self.exit_code = 1

    async def _close(self) -> None:
        self.health.ready = False
        self.metrics.ready.set(0)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._bounded(self._consumer.stop(), "stopping the consumer")
        if self._feedback_consumer is not None:
            with contextlib.suppress(Exception):
                await self._bounded(self._feedback_consumer.stop(), "stopping the feedback consumer")
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._bounded(self._producer.stop(), "stopping the producer")
        self._loop_guard.stop()
        self.scorer.shutdown()
        if self.http is not None:
            self.http.stop()
        log.info("stopped (exit code %d)", self.exit_code)

    # ------------------------------------------------------------ periodic jobs
    async def _commit_loop(self, fetcher: Fetcher) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_S)
            await self.commits.commit()
            if not self.commits.waiting():
                self.health.progressed()
            await fetcher.check_beyond_end()

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.state.snapshot_interval_s)
            try:
                # Spread over part of the interval: a steady trickle to the state topic.
                await self.commits.snapshot(list(self.commits.active), self.state, self.scorer,
                                            spread_s=self.config.state.snapshot_interval_s * SNAPSHOT_SPREAD)
            except Exception:
                # Keep snapshotting: a missed round only means a longer replay after a move.
                self.metrics.state_snapshot_failures.inc()
                log.exception("snapshot round failed")
            await self.commits.commit()

    async def snapshot(self, partitions: Collection[TopicPartition]) -> None:
        """Snapshot the changed devices of ``partitions`` (see :meth:`CommitProtocol.snapshot`)."""
        await self.commits.snapshot(partitions, self.state, self.scorer)
