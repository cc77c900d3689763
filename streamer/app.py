"""The daemon: the one orchestrator that owns start, run, drain and stop.

Data flow::

    fetch loop ──(bounded queue)──▶ score loop ──▶ scoring thread ──▶ publish ──▶ offsets done
      getmany + decode              micro-batch      ScoringPipeline      wait for acks    commit loop

Offsets are committed only for records whose readings were scored or
dead-lettered and whose alerts the broker acknowledged. Batches are scored
one at a time in fetch order, so the finished offsets of a partition are
always contiguous and the commit position is the highest one plus one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streamer.codec import DeadLetter, DecodedBatch, ReadingBatch, ReadingDecoder, Record, dead_letter
from streamer.config import Config, log_effective_config
from streamer.endpoints import Health, HealthServer
from streamer.errors import PipelineError
from streamer.kafka.clients import ensure_topics, make_consumer, make_producer
from streamer.kafka.publisher import Publisher
from streamer.metrics import Metrics
from streamer.scoring.batcher import MicroBatcher
from streamer.scoring.pipeline import ScoreResult, ScoringPipeline

log = logging.getLogger(__name__)

# How often to commit finished offsets: often enough that a restart replays
# little, rarely enough not to load the group coordinator.
COMMIT_INTERVAL_S = 1.0
# Watchdog period for event-loop lag and the liveness heartbeat.
WATCHDOG_INTERVAL_S = 0.5
# A revoke runs inside the rebalance callback; finishing queued work must stay
# well within the session timeout or the group moves on without us.
REVOKE_DRAIN_FRACTION = 0.5


@dataclass
class Fetched:
    """One fetch from Kafka: the raw records, their decoding, and where each partition ends."""

    records: Sequence[Record]
    decoded: DecodedBatch
    ends: Mapping[TopicPartition, int]  # next offset after this fetch, per partition

    def __len__(self) -> int:
        return len(self.records)


class Daemon:
    """Consumes readings, scores them and publishes alerts until stopped."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        pipeline: ScoringPipeline | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.pipeline = pipeline or ScoringPipeline(config)
        readings = config.readings
        self.decoder = ReadingDecoder(
            readings.channels,
            device_id_pattern=readings.device_id_pattern,
            max_message_bytes=readings.max_message_bytes,
            max_future_ms=readings.max_future_ms,
        )
        self.health = Health(stall_after_s=max(10.0, config.kafka.session_timeout_ms / 1000.0))
        self.batcher: MicroBatcher[Fetched] = MicroBatcher(
            max_batch=config.batching.max_batch,
            max_wait_ms=config.batching.max_wait_ms,
            queue_size=config.batching.queue_size,
        )
        # One scoring thread: the pipeline's state is not shared between threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamer-score")
        self._stop = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._done: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self._committed: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()
        self._consumer: Any = None
        self._producer: Any = None
        self._publisher: Publisher | None = None
        self.http: HealthServer | None = None
        self.exit_code = 0

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
            await ensure_topics(kafka, [kafka.input_topic, kafka.alert_topic, kafka.dead_letter_topic])
            self._producer = make_producer(kafka)
            await self._producer.start()
            self._publisher = Publisher(self._producer, kafka.alert_topic, kafka.dead_letter_topic)
            self._consumer = make_consumer(kafka, max_records=config.batching.max_batch)
            self._consumer.subscribe([kafka.input_topic], listener=_Rebalance(self))
            await self._consumer.start()
            log.info("consuming %s as group %s from %s", kafka.input_topic, kafka.group_id,
                     kafka.bootstrap_servers)
            await self._serve()
        except Exception as exc:
            log.exception("daemon failed")
            self.health.fatal = str(exc)
            self.exit_code = 1
        finally:
            await self._close()
        return self.exit_code

    async def _serve(self) -> None:
        fetch = asyncio.create_task(self._fetch_loop(), name="fetch")
        score = asyncio.create_task(self._score_loop(), name="score")
        helpers = [
            asyncio.create_task(self._watchdog(), name="watchdog"),
            asyncio.create_task(self._commit_loop(), name="commit"),
            asyncio.create_task(self._gauge_loop(), name="gauges"),
        ]
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait({fetch, score, stop}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stop}:
                task.result()  # a loop that ended on its own failed: raise its error
            # Graceful drain: stop fetching, score what is queued, commit.
            deadline = self.config.runtime.shutdown_timeout_s
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetch
            await self.batcher.close()
            try:
                await asyncio.wait_for(score, deadline)
            except TimeoutError:
                log.error(  # noqa: TRY400  # a timeout's traceback says nothing
                    "drain did not finish within %.1fs; uncommitted work will be replayed", deadline)
                self.exit_code = 1
        finally:
            for task in (fetch, score, stop, *helpers):
                task.cancel()
            await asyncio.gather(fetch, score, stop, *helpers, return_exceptions=True)
            # Only finished work is ever marked done, so committing it is
            # right even when a loop failed: less to replay for the next owner.
            await self.commit()

    async def _close(self) -> None:
        self.health.ready = False
        self.metrics.ready.set(0)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.http is not None:
            self.http.stop()
        log.info("stopped (exit code %d)", self.exit_code)

    # ------------------------------------------------------------------- loops
    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        max_records = self.config.batching.max_batch
        while True:
            fetched = await consumer.getmany(timeout_ms=100, max_records=max_records)
            records: list[Record] = [r for batch in fetched.values() for r in batch]
            if not records:
                continue
            self._idle.clear()
            self.metrics.consumed.inc(len(records))
            decoded = self.decoder.decode(records, time.time())
            ends = {tp: batch[-1].offset + 1 for tp, batch in fetched.items() if batch}
            await self.batcher.put(Fetched(records, decoded, ends))
            self.metrics.queue_depth.set(self.batcher.qsize())

    async def _score_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self.batcher.next_batch()
            if not items:
                return
            self._idle.clear()
            records, readings, letters = _combine(items, len(self.pipeline.channels))
            started = time.perf_counter()
            try:
                result = await loop.run_in_executor(self._executor, self.pipeline.score, readings)
            except Exception as exc:
                # Nothing of this batch is committed; the next owner replays it.
                raise PipelineError(f"scoring failed: {exc}") from exc
            batch_seconds = time.perf_counter() - started
            now_ms = int(time.time() * 1000)
            letters.extend(
                (records[r.record_index].key, dead_letter(records[r.record_index], r, now_ms))
                for r in result.rejections
            )
            assert self._publisher is not None  # noqa: S101  # set before the loops start
            await self._publisher.publish(result.alerts, letters)
            self._record(result, letters, batch_seconds, len(readings))
            self._mark_done(items)
            if self.batcher.qsize() == 0:
                self._idle.set()

    def _record(self, result: ScoreResult, letters: Sequence[tuple[bytes | None, DeadLetter]],
                batch_seconds: float, batch_size: int) -> None:
        m = self.metrics
        m.scored.inc(result.scored)
        m.warmup.inc(result.warmup)
        for _, letter in letters:
            m.rejected.labels(letter.reason).inc()
        acked = time.time()
        for alert in result.alerts:
            m.alerts.labels(alert.event, alert.method).inc()
            if alert.event == "open":
                m.event_to_alert.observe(max(0.0, acked - alert.ts / 1000.0))
        decided = result.decided_at
        m.event_to_decision.observe_many(np.maximum(0.0, decided - result.event_ts_ms / 1000.0))
        m.consume_to_decision.observe_many(decided - result.fetched_at)
        m.batch_size.observe(batch_size)
        m.batch_seconds.observe(batch_seconds)
        m.model_seconds.observe(result.model_seconds)
        m.queue_depth.set(self.batcher.qsize())

    def _mark_done(self, items: Sequence[Fetched]) -> None:
        # Items are scored in fetch order, so later ends supersede earlier ones.
        for item in items:
            self._done.update(item.ends)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_S)
            await self.commit()

    async def commit(self, partitions: Sequence[TopicPartition] | None = None) -> None:
        """Commit finished offsets (of ``partitions``, or all) that moved since the last commit."""
        async with self._commit_lock:
            offsets = {tp: off for tp, off in self._done.items()
                       if (partitions is None or tp in partitions) and self._committed.get(tp) != off}
            if not offsets or self._consumer is None:
                return
            try:
                await self._consumer.commit(offsets)
            except KafkaError as exc:
                # Not fatal: the offsets stay pending and the next commit retries.
                # If the partitions moved away, the new owner replays them.
                self.metrics.commits.labels("failed").inc()
                log.warning("commit failed (%s); will retry", exc)
                return
            self._committed.update(offsets)
            self.metrics.commits.labels("ok").inc()
            self.metrics.last_commit.set(time.time())

    async def _watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + WATCHDOG_INTERVAL_S
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            self.metrics.loop_lag.set(max(0.0, loop.time() - expected))
            self.health.beat()

    async def _gauge_loop(self) -> None:
        warmup = self.pipeline.warmup
        while True:
            registry = self.pipeline.registry
            self.metrics.devices.set(len(registry))
            self.metrics.devices_warming.set(registry.warming_up(warmup))
            self.metrics.episodes_open.set(self.pipeline.episodes.open_count())
            await self._report_lag()
            await asyncio.sleep(self.config.metrics.refresh_interval_s)

    async def _report_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = self._done.get(tp)
            if position is None:
                position = self._committed.get(tp)
            if position is None:
                continue
            self.metrics.lag.labels(str(tp.partition)).set(max(0, highwater - position))

    # --------------------------------------------------------------- rebalance
    async def on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Finish queued work and commit before the partitions move away."""
        if not revoked:
            return
        budget = self.config.kafka.session_timeout_ms / 1000.0 * REVOKE_DRAIN_FRACTION
        try:
            await asyncio.wait_for(self._idle.wait(), budget)
        except TimeoutError:
            log.warning("revoke: queued work not finished within %.1fs; it will be replayed", budget)
        await self.commit(list(revoked))
        self.metrics.forget_partitions(tp.partition for tp in revoked)
        for tp in revoked:
            self._done.pop(tp, None)
            self._committed.pop(tp, None)

    def on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        """Record the new assignment; the daemon is ready once it has one."""
        self.metrics.rebalances.inc()
        self.metrics.assigned.set(len(assigned))
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))
        if not self._stop.is_set():
            self.health.ready = True
            self.metrics.ready.set(1)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.daemon.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.daemon.on_assigned(list(assigned))


def _combine(
    items: Sequence[Fetched], channels: int
) -> tuple[list[Record], ReadingBatch, list[tuple[bytes | None, DeadLetter]]]:
    """One record list and one reading batch from several fetches; decode rejections as letters."""
    records: list[Record] = []
    batches: list[ReadingBatch] = []
    letters: list[tuple[bytes | None, DeadLetter]] = []
    now_ms = int(time.time() * 1000)
    for item in items:
        base = len(records)
        records.extend(item.records)
        readings = item.decoded.readings
        if base:
            readings = ReadingBatch(
                device_ids=readings.device_ids, ts_ms=readings.ts_ms, values=readings.values,
                fetched_at=readings.fetched_at, record_index=readings.record_index + base,
            )
        batches.append(readings)
        letters.extend(
            (item.records[r.record_index].key, dead_letter(item.records[r.record_index], r, now_ms))
            for r in item.decoded.rejections
        )
    return records, ReadingBatch.concat(batches, channels), letters
