"""Operator feedback for the partitions this daemon owns, applied between batches.

The feedback topic is keyed by device id and has the input topic's partition
count, so the feedback of a device is in the partition with the number of
its input partition. This daemon reads feedback partition ``p`` exactly while
it owns input partition ``p`` (from when the partition's state is in place
until it is revoked), with a consumer of its own, assigned by hand, whose
offsets are kept under the group ``<kafka.group_id>-feedback``. (One group
consumer over both topics would need every member to use the range assignor,
and a rolling upgrade from today's round-robin groups would split a device's
readings and feedback between daemons meanwhile.)

Each fetched message is parsed, applied to the device's state on the scorer
between two batches (:meth:`ScoringPipeline.apply_feedback`), and counted;
one that changes nothing goes to the dead-letter topic with its reason.

Offsets: a feedback offset is committed only once a state snapshot covers
the message's effect: a snapshot round notes how far feedback was applied
when it starts (its devices are then marked changed, so the round writes
them) and, once every slice is written, that position becomes committable.
A crash therefore loses no committed feedback: what was applied after the
last covering round is read again and re-applied to the restored state, and
what the restored state already holds is refused as a duplicate (every
message is idempotent). Without state snapshots (``state.enabled: false``) a
message is committed once applied and its dead letter acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streamer.codec import DeadLetter, Record, dead_letter_of
from streamer.config import Config
from streamer.feedback.adjustments import Applied
from streamer.feedback.messages import Feedback, FeedbackRejection, parse_feedback
from streamer.metrics import Metrics
from streamer.runtime.scorer import Scorer
from streamer.runtime.seams import AlertSink
from streamer.scoring.pipeline import ScoringPipeline

log = logging.getLogger(__name__)

FEEDBACK_GROUP_SUFFIX = "-feedback"
FETCH_TIMEOUT_MS = 200
RETRY_S = 1.0


def feedback_group(group_id: str) -> str:
    """The group whose offsets record how far feedback was applied.

    >>> feedback_group("streamer")
    'streamer-feedback'
    """
    return group_id + FEEDBACK_GROUP_SUFFIX


class FeedbackConsumer(Protocol):
    """What the follower needs of its consumer (AIOKafkaConsumer with a group id, assigned by hand)."""

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Read exactly ``partitions``."""

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset``."""

    async def seek_to_beginning(self, *partitions: TopicPartition) -> Any:
        """Read ``partitions`` from their first offset."""

    async def seek_to_end(self, *partitions: TopicPartition) -> Any:
        """Read ``partitions`` from their end."""

    async def position(self, tp: TopicPartition) -> int:
        """The next offset to read of ``tp``."""

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of ``tp``."""

    def pause(self, *partitions: TopicPartition) -> None:
        """Fetch nothing more of ``partitions``."""

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        """Fetched records per partition."""

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` for the group."""


class ScoringGate(Protocol):
    """Holds the scorer between two batches (:meth:`CommitProtocol.between_batches`)."""

    def between_batches(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold while device state is changed outside a batch."""


class FeedbackFollower:
    """Reads and applies the feedback of the owned partitions; commits what snapshots cover."""

    def __init__(self, consumer: FeedbackConsumer, *, config: Config, pipeline: ScoringPipeline,
                 scorer: Scorer, gate: ScoringGate, sink: AlertSink, metrics: Metrics,
                 snapshots: bool) -> None:
        """``snapshots``: device state is snapshotted (commits wait for a covering round)."""
        self.consumer = consumer
        self.topic = config.kafka.feedback_topic
        self.reset = config.kafka.auto_offset_reset
        self.max_records = config.batching.max_batch
        self.slice_devices = config.state.slice_devices  # a pattern's devices per job (bounds the pause)
        self.pipeline = pipeline
        self.scorer = scorer
        self.gate = gate
        self.sink = sink
        self.metrics = metrics
        self.snapshots = snapshots
        self.device_id_pattern = re.compile(config.readings.device_id_pattern)
        self.method = pipeline.threshold.method
        self._wanted: set[int] = set()  # partitions to follow (their input partition is active)
        # Unfollowed, kept assigned (paused) until their last offsets are committed.
        self._retiring: set[int] = set()
        self._assigned: set[int] = set()
        self._applied: dict[int, int] = {}  # next offset to apply, per followed partition
        self._covered: dict[int, int] = {}  # next offset to commit
        self._committed: dict[int, int] = {}
        self._reassign = False
        self._changed = asyncio.Event()
        self._apply_lock = asyncio.Lock()

    # ------------------------------------------------------------ ownership
    def follow(self, partition: int) -> None:
        """Start reading feedback partition ``partition`` (its input partition's state is in place)."""
        self._wanted.add(partition)
        if partition in self._retiring:  # back before it was forgotten: read on from its committed offset
            self._retiring.discard(partition)
            self._applied.pop(partition, None)
        self._reassign = True  # every partition is sought again to where it stands
        self._changed.set()

    async def unfollow(self, partitions: Collection[int], timeout_s: float | None = None) -> None:
        """Stop applying feedback of ``partitions``; waits (up to ``timeout_s``) for a message being applied.

        They stay assigned, paused, until :meth:`forget`: the snapshot round
        that follows covers what was applied, and :meth:`commit` commits it.
        """
        for partition in partitions:
            if partition in self._wanted:
                self._wanted.discard(partition)
                self._retiring.add(partition)
        retiring = [TopicPartition(self.topic, p) for p in partitions if p in self._assigned]
        if retiring:
            self.consumer.pause(*retiring)
        try:
            await asyncio.wait_for(self._apply_lock.acquire(), timeout_s)
        except TimeoutError:
            # Its offsets stay uncovered: the next owner reads the message again (idempotent).
            log.warning("feedback of partitions %s still being applied after %.1fs", sorted(partitions),
                        timeout_s or 0.0)
        else:
            self._apply_lock.release()

    def forget(self, partitions: Collection[int]) -> None:
        """Drop what is known of unfollowed ``partitions`` (after their last commit)."""
        for partition in partitions:
            if partition in self._retiring:
                self._retiring.discard(partition)
                self._applied.pop(partition, None)
                self._covered.pop(partition, None)
                self._committed.pop(partition, None)
        self._changed.set()

    # ------------------------------------------------------------ snapshot rounds
    def round_started(self, partitions: Collection[int]) -> dict[int, int]:
        """How far feedback of ``partitions`` was applied as a snapshot round starts."""
        return {p: offset for p, offset in self._applied.items() if p in partitions}

    def round_written(self, applied: Mapping[int, int]) -> None:
        """Every slice of the round that noted ``applied`` was written: it is committable."""
        for partition, offset in applied.items():
            self._covered[partition] = max(offset, self._covered.get(partition, offset))

    # ------------------------------------------------------------ the loop
    async def run(self) -> None:
        """Follow, fetch, apply and commit until cancelled."""
        while True:
            await self._reconcile()
            if not self._wanted:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), FETCH_TIMEOUT_MS / 1000)
                await self.commit()
                continue
            try:
                fetched = await self.consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS,
                                                      max_records=self.max_records)
                for tp, records in fetched.items():
                    if records:
                        await self._apply(tp, records)
                await self.commit()
            except KafkaError as exc:
                log.warning("feedback: %s; retrying from the last applied offsets", exc)
                self._assigned.clear()  # reassign and seek back to what was applied
                await asyncio.sleep(RETRY_S)

    async def _reconcile(self) -> None:
        """Assign exactly the wanted partitions, each at its applied (or committed) offset."""
        async with self._apply_lock:
            target = self._wanted | self._retiring
            if target == self._assigned and not self._reassign:
                return
            self._reassign = False
            await self._assign(target)

    async def _assign(self, target: set[int]) -> None:
        consumer = self.consumer
        tps = {p: TopicPartition(self.topic, p) for p in sorted(target)}
        consumer.assign(list(tps.values()))
        retiring = [tps[p] for p in self._retiring]
        if retiring:
            consumer.pause(*retiring)
        for partition, tp in tps.items():
            if partition in self._retiring:
                continue
            offset = self._applied.get(partition)
            if offset is None:
                offset = await consumer.committed(tp)
            if offset is None:
                if self.reset == "earliest":
                    await consumer.seek_to_beginning(tp)
                else:
                    await consumer.seek_to_end(tp)
                offset = await consumer.position(tp)
            else:
                consumer.seek(tp, offset)
            self._applied[partition] = offset
            self._covered.setdefault(partition, offset)
            self._committed.setdefault(partition, offset)
        self._assigned = target

    async def _apply(self, tp: TopicPartition, records: Sequence[Record]) -> None:
        partition = tp.partition
        async with self._apply_lock:
            if partition not in self._wanted or partition not in self._applied:
                return  # unfollowed meanwhile: the next owner reads these (or this one, from the commit)
            owned = frozenset({partition})
            letters: list[tuple[bytes | None, DeadLetter]] = []
            for record in records:
                outcome = await self._apply_one(parse_feedback(record, self.device_id_pattern), owned)
                if isinstance(outcome, FeedbackRejection):
                    letters.append((record.key, dead_letter_of(record, outcome.reason, outcome.detail)))
                    self.metrics.feedback_rejected.labels(outcome.reason).inc()
            if letters:
                await (await self.sink.send([], letters))
            self._applied[partition] = records[-1].offset + 1
            if not self.snapshots:
                self._covered[partition] = self._applied[partition]

    async def _apply_one(self, message: Feedback | FeedbackRejection,
                         owned: frozenset[int]) -> Applied | FeedbackRejection:
        """Apply one message on the scorer between batches: a pattern's devices a slice at a time."""
        if isinstance(message, FeedbackRejection):
            return message
        if message.device_pattern is None:
            outcome = await self._job(message, owned, None)
        else:
            devices = 0
            registry = self.pipeline.registry
            for start in range(0, max(registry.high_water, 1), self.slice_devices):
                part = await self._job(message, owned, range(start, start + self.slice_devices))
                if isinstance(part, FeedbackRejection):
                    return part
                devices += part.devices
            outcome = Applied(devices)
        if isinstance(outcome, Applied):
            self.metrics.feedback_applied.labels(message.kind, self.method,
                                                 self.pipeline.predictor.version).inc()
            if outcome.candidate_flagged is not None:
                self.metrics.shadow_feedback.labels(
                    message.kind, "flagged" if outcome.candidate_flagged else "silent").inc()
        return outcome

    async def _job(self, message: Feedback, owned: frozenset[int],
                   among: range | None) -> Applied | FeedbackRejection:
        def apply() -> Applied | FeedbackRejection:
            try:
                return self.pipeline.apply_feedback(message, owned, among)
            except Exception as exc:  # a bug must not stop detection: refuse the message, loudly
                log.exception("feedback %s could not be applied", message.kind)
                return FeedbackRejection("invalid_feedback", f"could not be applied: {exc}"[:200])

        async with self.gate.between_batches():
            return await self.scorer.run_job(apply, "feedback")

    async def commit(self, partitions: Collection[int] | None = None) -> None:
        """Commit the covered offsets (of ``partitions``, or all) that moved."""
        offsets = {TopicPartition(self.topic, p): offset for p, offset in self._covered.items()
                   if offset != self._committed.get(p) and (partitions is None or p in partitions)}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("feedback commit failed (%s); will retry", exc)
            return
        for tp, offset in offsets.items():
            self._committed[tp.partition] = offset
