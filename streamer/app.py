"""The daemon: the one orchestrator that owns start, run, drain and stop.

Data flow::

    fetch loop ──(bounded queue)──▶ score loop ──▶ scorer ──────────▶ publish ──▶ offsets done
      getmany + decode              micro-batch      ScoringPipeline      wait for acks    commit loop

Batches are scored on the event loop itself or on a scoring thread
(``runtime.scoring``); snapshots, restores and releases always run on the
scoring thread. One thread at a time touches device state: the loop scores
only while the scoring thread is idle.

Delivery guarantees (at least once; duplicates removable by alert id):

- the commit position of a partition is its *frontier*: every record
  before it was scored or dead-lettered and every alert it caused was
  acknowledged by the broker. Micro-batches are scored one at a time, in
  fetch order, and a batch is marked done only as a whole, after its
  publish was acknowledged, so a partition's finished offsets are always
  contiguous and the frontier is simply the end of its last finished
  batch (no gap tracking as in faust's acked-offset sets is needed). A
  batch that fails (scoring or publishing, whatever partitions it spans)
  marks nothing done: none of its offsets is committed, the daemon exits
  non-zero and the next owner reprocesses it;
- the frontier is the offset after the last *record* of a batch, so
  transaction markers and compaction gaps after it are skipped on the next
  fetch rather than waited for.

Backpressure: the fetch loop feeds a bounded queue (``batching.queue_size``
fetches). Once ``batching.pause_high`` readings are queued every assigned
partition is paused (aiokafka drops what it prefetched for them) and the
fetch loop keeps polling without fetching; at ``batching.pause_low`` they
resume. Queued readings therefore never exceed ``pause_high`` plus one
fetch. A partition also paused because its state is being restored stays
paused until the restore is done (:class:`PartitionPauses` keeps the
reasons apart).

No zombies: the daemon stops with exit code 1 (after failing ``/healthz``)
when the brokers have not answered for ``kafka.unreachable_timeout_s``,
or when records have waited ``runtime.commit_stall_timeout_s`` without a
single commit advancing (a wedged scorer, commits that keep failing). A
scoring thread is a daemon thread, so a scorer wedged in a model call does
not keep the process alive after that; a scorer wedged on the event loop
blocks the watchdog task too, so :class:`~streamer.loop_guard.LoopGuard`
watches from its own thread and ends the process.

Offset resets: a partition whose committed offset is out of range (below
the log start after retention, or beyond the log end) is reset to
``kafka.auto_offset_reset``, logged as a warning with both offsets, and
counted in ``streamer_offset_resets_total{reason="out_of_range"}``. Kafka
reports such a fetch as an error; brokers that instead answer it with no
records (Tansu) are caught by comparing the position with the high
watermark.

Per-device state moves with its partition (:mod:`streamer.state.manager`):

- every ``state.snapshot_interval_s``, on revoke and on shutdown, changed
  devices are snapshotted *between* batches (under the scoring lock, so
  each partition's state reflects exactly its finished offset), written to
  the state topic and acknowledged, and only then are offsets committed;
- aiokafka's rebalance is eager: every rebalance revokes *all* partitions
  and then assigns the new set. Revoked state is therefore kept, suspended,
  until the assignment is known (as Kafka Streams suspends tasks): a
  partition that comes back with its committed offset unchanged resumes
  with its state as it is; the devices of partitions that moved away are
  released;
- every other assigned partition is paused inside the assignment callback
  (before any of its records can be fetched) and restored by a background
  task (the callback must return quickly: aiokafka heartbeats only after it
  does), then resumed. Records of a partition that is not active (being
  restored, or revoked while queued) are never scored and never committed:
  the owner reprocesses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError

from streamer.codec import DeadLetter, DecodedBatch, ReadingBatch, ReadingDecoder, Record, dead_letter
from streamer.config import Config, log_effective_config
from streamer.endpoints import Health, HealthServer
from streamer.errors import PipelineError, StreamerError
from streamer.kafka.clients import (
    PartitionPauses,
    broker_answers,
    ensure_state_topic,
    ensure_topics,
    make_consumer,
    make_producer,
    make_reader,
    partition_count,
    reset_positions,
)
from streamer.kafka.publisher import Publisher
from streamer.loop_guard import LoopGuard
from streamer.metrics import PAUSE_REASONS, Metrics
from streamer.scoring.batcher import Backpressure, MicroBatcher
from streamer.scoring.pipeline import ScoreResult, ScoringPipeline
from streamer.state.manager import StateManager, release_partitions

log = logging.getLogger(__name__)

# How often to commit finished offsets: often enough that a restart replays
# little, rarely enough not to load the group coordinator.
COMMIT_INTERVAL_S = 1.0
# Consecutive failing watchdog ticks before a daemon that is not live stops.
LIVENESS_FAILED_TICKS = 2
# Watchdog period for event-loop lag and the liveness heartbeat.
WATCHDOG_INTERVAL_S = 0.5
# A revoke runs inside the rebalance callback; finishing queued work must stay
# well within the session timeout or the group moves on without us.
REVOKE_DRAIN_FRACTION = 0.5
# Marks a suspended partition whose in-memory state may be ahead of its
# finished offset (the revoke drain timed out): never equal to a committed
# offset, so the partition is restored rather than resumed as it is.
_UNKNOWN_POSITION = -2
# Of the shutdown budget (runtime.shutdown_timeout_s), the share spent
# finishing queued work; the rest is kept for the snapshot, the commit and
# closing the clients, so the whole shutdown fits the budget.
DRAIN_FRACTION = 0.6
# No shutdown step gets less than this, even when the budget is spent: a
# last commit attempt is worth a small overrun.
MIN_STEP_S = 0.5
# A position beyond the high watermark must persist this long before it is
# taken as out of range: right after a leader change the new leader's high
# watermark may briefly lag the old one's.
BEYOND_END_CONFIRM_S = 5.0
# Why partitions are paused (see PartitionPauses).
RESTORE = "restore"
BACKPRESSURE = "backpressure"
# Why a position was reset (labels of streamer_offset_resets_total).
OUT_OF_RANGE = "out_of_range"
NO_COMMITTED_OFFSET = "no_committed_offset"

T = TypeVar("T")
P = ParamSpec("P")


@dataclass
class Fetched:
    """One fetch from Kafka: the raw records, their decoding, and where each partition ends."""

    records: Sequence[Record]
    decoded: DecodedBatch
    ends: Mapping[TopicPartition, int]  # next offset after this fetch, per partition
    partitions: npt.NDArray[np.int32]  # input partition of each record

    def __len__(self) -> int:
        return len(self.records)


@dataclass
class _Unacked:
    """A scored batch whose alerts and dead letters await the broker's acknowledgement."""

    items: Sequence[Fetched]
    acks: Awaitable[Any]
    result: ScoreResult
    letters: Sequence[tuple[bytes | None, DeadLetter]]
    batch_seconds: float
    readings: int


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
        self.health = Health(stall_after_s=max(10.0, config.kafka.session_timeout_ms / 1000.0),
                             unreachable_after_s=config.kafka.unreachable_timeout_s,
                             commit_stall_after_s=config.runtime.commit_stall_timeout_s)
        self.batcher: MicroBatcher[Fetched] = MicroBatcher(
            max_batch=config.batching.max_batch,
            max_wait_ms=config.batching.max_wait_ms,
            queue_size=config.batching.queue_size,
        )
        high, low = config.batching.pause_marks()
        self.backpressure = Backpressure(high=high, low=low)
        # Device state is touched by one thread at a time. Snapshots, restores
        # and releases always run on the scoring thread (however long they
        # take, the event loop keeps serving heartbeats); batches are scored
        # there too with runtime.scoring=thread, else on the event loop, but
        # only while the scoring thread is idle (see _on_scorer).
        self._executor = ScoringThread("streamer-score")
        self._score_inline = not config.runtime.scores_on_thread(config.predictor)
        self._loop_guard = LoopGuard(self.health, interval_s=WATCHDOG_INTERVAL_S,
                                     failed_ticks=LIVENESS_FAILED_TICKS)
        self._stop = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._done: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self._committed: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()
        self._consumer: Any = None
        self._pauses: PartitionPauses | None = None
        self._producer: Any = None
        # Next offset after the last record fetched, per active partition: a
        # commit position behind it means records are waiting (commit stall check).
        self._fetched: dict[TopicPartition, int] = {}
        self._beyond_end_since: dict[TopicPartition, float] = {}
        self._shutdown_deadline: float | None = None
        self._publisher: Publisher | None = None
        self.state: StateManager | None = None
        # Held while a batch is scored, published and marked done: a snapshot
        # taken under it sees each partition's state at its finished offset.
        self._score_lock = asyncio.Lock()
        self._state_torn = False  # a batch failed midway: in-memory state is ahead of its offsets
        # Scored batches awaiting their acknowledgements, in fetch order (see _ack_loop).
        # Its join() returns once every batch put so far is done.
        self._unacked: asyncio.Queue[_Unacked | None] = asyncio.Queue()
        self._unacked_room = asyncio.Semaphore(config.batching.max_unacked_batches)
        self._taken = 0  # batches taken from the batcher and not yet done (scored and acknowledged)
        self._active: set[TopicPartition] = set()  # assigned, state in place: scored and committed
        self._suspended: dict[TopicPartition, int | None] = {}  # revoked, state kept at this offset
        self._takeover: asyncio.Task[None] | None = None
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
        log.info("scoring on %s", "the event loop" if self._score_inline else "a scoring thread")
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
            self.health.contact()
            self._producer = make_producer(kafka)
            await self._producer.start()
            self._publisher = Publisher(self._producer, kafka.alert_topic, kafka.dead_letter_topic)
            if config.state.enabled:
                partitions = await partition_count(self._producer, kafka.input_topic)
                await ensure_state_topic(kafka, kafka.state_topic_name(), partitions)
                self.state = StateManager(self.pipeline, config, producer=self._producer,
                                          run=self._on_state_job, metrics=self.metrics)
                log.info("device state: %s (%d bytes per device, fingerprint %s)",
                         kafka.state_topic_name(), self.state.schema.row_bytes,
                         self.state.schema.fingerprint)
            self._consumer = make_consumer(kafka, max_records=config.batching.max_batch)
            self._pauses = PartitionPauses(self._consumer)
            # Subscribe after start: start() would otherwise wait for the first
            # assignment, unwatched, for as long as the group cannot be joined.
            await self._consumer.start()
            self._consumer.subscribe([kafka.input_topic], listener=_Rebalance(self))
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
        # The liveness clocks start now: joining the group is not a stall.
        self.health.contact()
        self.health.progressed()
        self.health.beat()  # start-up (model load, topic checks) is not a stalled loop
        self._loop_guard.start()
        fetch = asyncio.create_task(self._fetch_loop(), name="fetch")
        score = asyncio.create_task(self._score_loop(), name="score")
        acks = asyncio.create_task(self._ack_loop(), name="acks")
        # Ends the daemon (with an error) once it is no longer live.
        watchdog = asyncio.create_task(self._watchdog(), name="watchdog")
        helpers = [
            asyncio.create_task(self._commit_loop(), name="commit"),
            asyncio.create_task(self._gauge_loop(), name="gauges"),
            asyncio.create_task(self._probe_loop(), name="broker-probe"),
        ]
        if self.state is not None:
            helpers.append(asyncio.create_task(self._snapshot_loop(), name="snapshots"))
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
            await self._cancel_takeover()
            await self.batcher.close()
            try:
                await asyncio.wait_for(asyncio.gather(score, acks), budget * DRAIN_FRACTION)
            except TimeoutError:
                log.error(  # noqa: TRY400  # a timeout's traceback says nothing
                    "drain did not finish within %.1fs; uncommitted work will be replayed",
                    budget * DRAIN_FRACTION)
                self.exit_code = 1
            else:
                # aiokafka calls no revoke listener on stop: hand the state over here.
                await self._bounded(self.snapshot(list(self._active)), "final snapshot")
        finally:
            if self._shutdown_deadline is None:  # failed: the budget starts now
                self._shutdown_deadline = time.monotonic() + self.config.runtime.shutdown_timeout_s
            await self._cancel_takeover()
            for task in (fetch, score, acks, watchdog, stop, *helpers):
                task.cancel()
            await asyncio.gather(fetch, score, acks, watchdog, stop, *helpers, return_exceptions=True)
            # Only finished work is ever marked done, so committing it is
            # right even when a loop failed: less to replay for the next owner.
            await self._bounded(self.commit(), "final commit")

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
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._bounded(self._producer.stop(), "stopping the producer")
        self._loop_guard.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.http is not None:
            self.http.stop()
        log.info("stopped (exit code %d)", self.exit_code)

    # ------------------------------------------------------------------- loops
    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        max_records = self.config.batching.max_batch
        while True:
            try:
                fetched = await consumer.getmany(timeout_ms=100, max_records=max_records)
            except OffsetOutOfRangeError as exc:
                await self._reset_offsets(_offsets_of(exc), OUT_OF_RANGE)
                continue
            except NoOffsetForPartitionError as exc:
                await self._reset_offsets(_offsets_of(exc), NO_COMMITTED_OFFSET)
                continue
            records: list[Record] = [r for batch in fetched.values() for r in batch]
            if not records:
                continue
            self._idle.clear()
            self.metrics.consumed.inc(len(records))
            decoded = self.decoder.decode(records, time.time())
            ends = {tp: batch[-1].offset + 1 for tp, batch in fetched.items() if batch}
            # One partition number per record, from the per-partition lists (no per-record work).
            partitions = np.repeat(np.array([tp.partition for tp in fetched], dtype=np.int32),
                                   [len(batch) for batch in fetched.values()])
            self._fetched.update(ends)
            await self.batcher.put(Fetched(records, decoded, ends, partitions))
            self.metrics.queue_depth.set(self.batcher.qsize())
            self._apply_backpressure()

    def _apply_backpressure(self) -> None:
        """Pause every partition above the high mark, resume at the low mark."""
        queued = self.batcher.readings()
        self.metrics.queue_readings.set(queued)
        change = self.backpressure.update(queued, full=self.batcher.full())
        if change is None or self._pauses is None:
            return
        if change:
            self._pauses.pause_all(BACKPRESSURE)
            self.metrics.backpressure_pauses.inc()
            log.debug("backpressure: %d readings queued; partitions paused", queued)
        else:
            self._pauses.resume_all(BACKPRESSURE)
            log.debug("backpressure: %d readings queued; partitions resumed", queued)
        self._report_pauses()

    def _report_pauses(self) -> None:
        if self._pauses is not None:
            for reason in PAUSE_REASONS:
                self.metrics.partitions_paused.labels(reason).set(self._pauses.count(reason))

    async def _reset_offsets(self, partitions: Mapping[TopicPartition, int | None], reason: str) -> None:
        """Move ``partitions`` to ``kafka.auto_offset_reset``, then count and log each move."""
        policy = self.config.kafka.auto_offset_reset
        try:
            moved = await reset_positions(self._consumer, list(partitions), policy)
        except KafkaError as exc:
            # The consumer raises the same error again on the next fetch: retried then.
            log.warning("resetting partitions %s to %s failed (%s); will retry",
                        sorted(tp.partition for tp in partitions), policy, exc)
            return
        for tp, position in moved.items():
            self.metrics.offset_resets.labels(reason).inc()
            if reason == OUT_OF_RANGE:
                log.warning("partition %d: offset %s is out of range; reset to the %s offset %d "
                            "(kafka.auto_offset_reset)", tp.partition, partitions[tp], policy, position)
            else:
                log.info("partition %d: the group has no committed offset; starting at the %s offset %d",
                         tp.partition, policy, position)

    async def _score_loop(self) -> None:
        while True:
            items = await self.batcher.next_batch()
            self._apply_backpressure()
            if not items:
                self._unacked.put_nowait(None)  # closed and drained: the ack loop ends after the rest
                return
            self._idle.clear()
            self._taken += 1
            # Room for one more unacknowledged batch (batching.max_unacked_batches);
            # released by the ack loop once this batch is done.
            await self._unacked_room.acquire()
            async with self._score_lock:
                try:
                    owned = self._owned(items)
                    unacked = await self._score_items(owned) if owned else None
                except BaseException:
                    # State may now be ahead of the finished offsets: never snapshot it.
                    self._state_torn = True
                    raise
                if unacked is not None:
                    # Under the lock: a snapshot taken next waits for this batch's acknowledgements.
                    self._unacked.put_nowait(unacked)
            if unacked is None:
                self._batch_finished()

    async def _score_items(self, items: Sequence[Fetched]) -> _Unacked:
        """Score ``items`` and hand their alerts and dead letters to the producer, in order.

        Returns the batch, to be marked done by :meth:`_ack_loop` once the
        broker has acknowledged what was sent.
        """
        records, readings, letters, partitions = _combine(items, len(self.pipeline.channels))
        started = time.perf_counter()
        try:
            result = await self._on_scorer(lambda: self._score(readings, partitions))
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
        acks = await self._publisher.send(result.alerts, letters)
        return _Unacked(items, acks, result, letters, batch_seconds, len(readings))

    async def _ack_loop(self) -> None:
        """Mark scored batches done in fetch order as their acknowledgements arrive.

        A batch is done only once it and every batch scored before it are
        acknowledged, so the finished offsets (what is committed) never pass
        an alert the broker has not taken.
        """
        while True:
            batch = await self._unacked.get()
            if batch is None:
                self._unacked.task_done()
                return
            try:
                await batch.acks
            except BaseException:
                self._state_torn = True  # scored, but its offsets will never be done
                raise
            self._record(batch.result, batch.letters, batch.batch_seconds, batch.readings)
            self._mark_done(batch.items)
            self._unacked.task_done()
            self._batch_finished()

    def _batch_finished(self) -> None:
        """A batch taken by the score loop is done: free its room; idle when nothing is left."""
        self._taken -= 1
        self._unacked_room.release()
        if self._taken == 0 and self.batcher.qsize() == 0:
            self._idle.set()

    def _score(self, readings: ReadingBatch, partitions: npt.NDArray[np.int32]) -> ScoreResult:
        """Score on the scorer; new devices remember the partition their reading came from."""
        return self.pipeline.score(readings, partitions[readings.record_index])

    def _owned(self, items: Sequence[Fetched]) -> list[Fetched]:
        """The fetched records of active partitions only.

        Records of a partition that was revoked (or is being restored) since
        they were fetched are dropped unscored and uncommitted: their owner
        reprocesses them against the right state.
        """
        active = self._active
        kept: list[Fetched] = []
        for item in items:
            if all(tp in active for tp in item.ends):
                kept.append(item)
                continue
            records = [r for r in item.records if TopicPartition(r.topic, r.partition) in active]
            if not records:
                continue
            fetched_at = item.decoded.readings.fetched_at
            decoded = self.decoder.decode(records, float(fetched_at[0]) if len(fetched_at) else None)
            ends = {tp: end for tp, end in item.ends.items() if tp in active}
            partitions = np.array([r.partition for r in records], dtype=np.int32)
            kept.append(Fetched(records, decoded, ends, partitions))
        return kept

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
            self._done.update((tp, end) for tp, end in item.ends.items() if tp in self._active)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_S)
            await self.commit()
            if not self._waiting():
                self.health.progressed()
            await self._check_beyond_end()

    def _waiting(self) -> bool:
        """Whether fetched records of an active partition wait for their offsets to be committed."""
        return any(self._fetched[tp] != self._committed.get(tp) for tp in self._active if tp in self._fetched)

    async def _check_beyond_end(self) -> None:
        """Reset active partitions whose position stays beyond the high watermark.

        Kafka answers a fetch beyond the log end with OFFSET_OUT_OF_RANGE;
        some Kafka-protocol brokers (Tansu) answer it with no records, which
        would leave the partition stalled for good.
        """
        consumer = self._consumer
        if consumer is None:
            return
        now = time.monotonic()
        paused = consumer.paused()
        for tp in list(self._active):
            highwater = consumer.highwater(tp) if tp in consumer.assignment() else None
            position = await self._position(tp) if highwater is not None and tp not in paused else None
            if highwater is None or position is None or position <= highwater:
                self._beyond_end_since.pop(tp, None)
                continue
            since = self._beyond_end_since.setdefault(tp, now)
            if now - since >= BEYOND_END_CONFIRM_S:
                del self._beyond_end_since[tp]
                log.warning("partition %d: position %d is beyond the high watermark %d",
                            tp.partition, position, highwater)
                await self._reset_offsets({tp: position}, OUT_OF_RANGE)

    async def _position(self, tp: TopicPartition) -> int | None:
        """The consumer's position of ``tp``, if it has a valid one now."""
        try:
            position: int = await asyncio.wait_for(self._consumer.position(tp), 0.2)
        except (KafkaError, TimeoutError):
            return None
        return position

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
            self.health.progressed()
            self.metrics.commits.labels("ok").inc()
            self.metrics.last_commit.set(time.time())

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.state.snapshot_interval_s)
            try:
                await self.snapshot(list(self._active))
            except Exception:
                # Keep snapshotting: a missed round only means a longer replay after a move.
                self.metrics.state_snapshot_failures.inc()
                log.exception("snapshot round failed")
            await self.commit()

    async def snapshot(self, partitions: Collection[TopicPartition]) -> None:
        """Snapshot the changed devices of ``partitions`` and wait for the state topic's acks.

        Taken between batches, so each device is stamped with the finished
        offset its partition's state reflects. Call before committing: the
        committed offset is then at or beyond every snapshot's stamp.
        """
        state = self.state
        if state is None or self._state_torn:
            return
        async with self._score_lock:
            # State holds every scored batch; the stamps must be offsets whose work is done.
            await self._unacked.join()
            if self._state_torn:
                return
            positions = {tp.partition: self._done[tp] for tp in partitions
                         if tp in self._active and tp in self._done}
            if not positions:
                return
            taken = await self._on_state_job(lambda: state.take(positions))
        try:
            await state.write(taken)
        except KafkaError as exc:
            # Not fatal: the devices stay changed and the next round retries;
            # meanwhile a new owner restores older snapshots and replays more.
            self.metrics.state_snapshot_failures.inc()
            log.warning("snapshot of %d devices not acknowledged (%s)", len(taken.values), exc)

    def _on_state_job(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run a device-state job other than scoring (snapshot, restore, release) on the scoring thread."""
        return asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _on_scorer(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Score: on the event loop (``runtime.scoring``) while the scoring thread is idle, else on it.

        Only the event loop submits jobs, so a thread found idle here stays
        idle while ``fn`` runs: one thread at a time touches device state, and
        a batch scored behind a state job waits for it (jobs run in order).
        Inline, the returned future is already done (no hand-off through the
        loop's self-pipe), so awaiting it does not yield.
        """
        loop = asyncio.get_running_loop()
        if not (self._score_inline and self._executor.idle()):
            return loop.run_in_executor(self._executor, fn)
        future: asyncio.Future[T] = loop.create_future()
        try:
            future.set_result(fn())
        except Exception as exc:  # noqa: BLE001  # handed to the awaiting caller, as an executor does
            future.set_exception(exc)
        return future

    async def _watchdog(self) -> None:
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

    async def _probe_loop(self) -> None:
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
            if await broker_answers(self._consumer, tp, timeout):
                self.health.contact()
                self.metrics.broker_contact.set(time.time())
            await asyncio.sleep(interval)

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
        """Finish queued work, snapshot and commit before the partitions move away.

        The revoked partitions' state stays in memory, suspended, until the
        next assignment says whether they come back.
        """
        await self._cancel_takeover()
        if not revoked:
            return
        budget = self.config.kafka.session_timeout_ms / 1000.0 * REVOKE_DRAIN_FRACTION
        drained = True
        try:
            await asyncio.wait_for(self._idle.wait(), budget)
        except TimeoutError:
            drained = False
            log.warning("revoke: queued work not finished within %.1fs; it will be replayed", budget)
        if drained:
            await self.snapshot(revoked)
        await self.commit(list(revoked))
        self.metrics.forget_partitions(tp.partition for tp in revoked)
        if self._pauses is not None:
            self._pauses.forget(revoked)
        restoring: list[int] = []
        for tp in revoked:
            if tp in self._active:
                self._suspended[tp] = self._done.get(tp) if drained else _UNKNOWN_POSITION
            else:  # revoked mid-restore: its devices are partly rebuilt
                restoring.append(tp.partition)
            self._active.discard(tp)
            self._done.pop(tp, None)
            self._committed.pop(tp, None)
            self._fetched.pop(tp, None)
            self._beyond_end_since.pop(tp, None)
        if restoring:
            await self._on_state_job(lambda: release_partitions(self.pipeline.registry, restoring))

    def on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        """Pause the new assignment and start taking it over; the daemon is ready once it has one."""
        self.metrics.rebalances.inc()
        self.metrics.assigned.set(len(assigned))
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))
        if self._pauses is not None and assigned:
            # Synchronously, before the callback yields: no record of these
            # partitions can be fetched before their state is in place.
            self._pauses.pause(assigned, RESTORE)
            self._report_pauses()
        self._takeover = asyncio.create_task(self._take_over(set(assigned)), name="takeover")
        if not self._stop.is_set():
            self.health.ready = True
            self.metrics.ready.set(1)

    async def _take_over(self, assigned: set[TopicPartition]) -> None:
        """Resume kept partitions as they are, release moved ones, restore the rest, then resume."""
        try:
            await self._take_over_partitions(assigned)
        except asyncio.CancelledError:
            raise
        except Exception:  # any failure: score cold rather than stall the partitions
            log.exception("taking over partitions failed; they start cold (devices warm up again)")
            cold = [tp for tp in assigned if tp not in self._active]
            self.metrics.state_cold_partitions.inc(len(cold))
            cold_partitions = [tp.partition for tp in cold]
            await self._on_state_job(lambda: release_partitions(self.pipeline.registry, cold_partitions))
            for tp in cold:
                self._activate(tp, None)

    async def _take_over_partitions(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer
        committed: dict[TopicPartition, int | None] = {tp: await consumer.committed(tp) for tp in assigned}
        kept = {tp for tp in assigned if tp in self._suspended and self._suspended[tp] == committed[tp]}
        stale = [tp.partition for tp in self._suspended if tp not in kept]
        self._suspended.clear()
        if stale:
            released = await self._on_state_job(lambda: release_partitions(self.pipeline.registry, stale))
            log.info("released %d devices of partitions %s", released, sorted(stale))
        for tp in kept:
            self._activate(tp, committed[tp])
        rest = sorted(assigned - kept)
        state = self.state
        if state is None or not rest:
            for tp in rest:
                self._activate(tp, committed[tp])
            return
        deadline = time.monotonic() + self.config.state.restore_timeout_s
        reader = make_reader(self.config.kafka, max_records=self.config.batching.max_batch)
        await reader.start()
        try:
            for tp in rest:
                offset = committed[tp]
                if offset is None:  # the group never committed here: nothing to restore
                    self._activate(tp, None)
                    continue
                try:
                    await state.restore_partition(reader, tp.partition, offset, deadline=deadline)
                except (KafkaError, TimeoutError) as exc:
                    log.warning("partition %d: restore failed (%s); its devices warm up again",
                                tp.partition, exc)
                    self.metrics.state_cold_partitions.inc()
                    await state.release([tp.partition])
                self._activate(tp, offset)
        finally:
            await reader.stop()

    def _activate(self, tp: TopicPartition, committed: int | None) -> None:
        """State of ``tp`` is in place as of ``committed``: score, snapshot and commit it again."""
        self._active.add(tp)
        if committed is not None:
            self._done[tp] = committed
            self._committed[tp] = committed
        if self._pauses is not None:
            # Still paused while backpressure holds every partition.
            self._pauses.resume([tp], RESTORE)
            self._report_pauses()

    async def _cancel_takeover(self) -> None:
        task, self._takeover = self._takeover, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.daemon.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.daemon.on_assigned(list(assigned))


def _combine(
    items: Sequence[Fetched], channels: int
) -> tuple[list[Record], ReadingBatch, list[tuple[bytes | None, DeadLetter]], npt.NDArray[np.int32]]:
    """One record list and one reading batch from several fetches; decode rejections as letters.

    Also returns the input partition of each record of the list.
    """
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
    partitions = (items[0].partitions if len(items) == 1
                  else np.concatenate([item.partitions for item in items]))
    return records, ReadingBatch.concat(batches, channels), letters, partitions


def _offsets_of(exc: KafkaError) -> dict[TopicPartition, int | None]:
    """The partitions (and fetch offsets, where known) an aiokafka position error names.

    ``OffsetOutOfRangeError`` carries ``{partition: fetch offset}``;
    ``NoOffsetForPartitionError`` carries the partition.
    """
    out: dict[TopicPartition, int | None] = {}
    for arg in exc.args:
        if isinstance(arg, TopicPartition):
            out[arg] = None
        elif isinstance(arg, Mapping):
            out.update((tp, offset) for tp, offset in arg.items() if isinstance(tp, TopicPartition))
    return out


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
