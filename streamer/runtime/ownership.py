"""Partition ownership: rebalances, and taking partitions over with their device state.

Per-device state moves with its partition (:mod:`streamer.state.manager`):

- on revoke, queued work is finished, changed devices are snapshotted and
  the finished offsets committed before the partitions move away;
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
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streamer.config import Config
from streamer.endpoints import Health
from streamer.kafka.clients import PartitionPauses, make_reader
from streamer.logs import event
from streamer.metrics import Metrics
from streamer.runtime.commits import CommitProtocol
from streamer.runtime.feedback import FeedbackFollower
from streamer.runtime.fetcher import RESTORE
from streamer.runtime.scorer import Scorer
from streamer.runtime.seams import Consumer
from streamer.state.manager import StateManager, release_in_slices
from streamer.state.registry import DeviceRegistry

log = logging.getLogger(__name__)

# A revoke runs inside the rebalance callback; finishing queued work must stay
# well within the session timeout or the group moves on without us.
REVOKE_DRAIN_FRACTION = 0.5
# Marks a suspended partition whose in-memory state may be ahead of its
# finished offset (the revoke drain timed out): never equal to a committed
# offset, so the partition is restored rather than resumed as it is.
UNKNOWN_POSITION = -2


class PartitionOwnership:
    """Follows the group's assignment: suspends, releases, restores and activates partitions."""

    def __init__(self, consumer: Consumer, *, config: Config, pauses: PartitionPauses,
                 commits: CommitProtocol, scorer: Scorer, state: StateManager | None,
                 registry: DeviceRegistry, metrics: Metrics, health: Health,
                 wait_idle: Callable[[], Awaitable[None]], stopping: Callable[[], bool],
                 report_pauses: Callable[[], None], feedback: FeedbackFollower | None = None) -> None:
        """``wait_idle`` waits until queued work is finished; ``stopping`` says whether shutdown began.

        ``feedback`` follows the feedback partitions of the active input partitions.
        """
        self.consumer = consumer
        self.config = config
        self.pauses = pauses
        self.commits = commits
        self.scorer = scorer
        self.state = state
        self.registry = registry
        self.metrics = metrics
        self.health = health
        self.wait_idle = wait_idle
        self.stopping = stopping
        self.report_pauses = report_pauses
        self.feedback = feedback
        self._suspended: dict[TopicPartition, int | None] = {}  # revoked, state kept at this offset
        self._takeover: asyncio.Task[None] | None = None

    def listener(self) -> ConsumerRebalanceListener:
        """The rebalance listener to subscribe with."""
        return _Rebalance(self)

    async def on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Finish queued work, snapshot and commit before the partitions move away.

        The revoked partitions' state stays in memory, suspended, until the
        next assignment says whether they come back.
        """
        await self.cancel_takeover()
        if not revoked:
            return
        budget = self.config.kafka.session_timeout_ms / 1000.0 * REVOKE_DRAIN_FRACTION
        drained = True
        try:
            await asyncio.wait_for(self.wait_idle(), budget)
        except TimeoutError:
            drained = False
            log.warning("revoke: queued work not finished within %.1fs; it will be replayed", budget,
                        extra=event("replay_pending"))
        commits = self.commits
        numbers = [tp.partition for tp in revoked]
        if self.feedback is not None:
            await self.feedback.unfollow(numbers, timeout_s=budget)
        if drained:
            await commits.snapshot(revoked, self.state, self.scorer)
        await commits.commit(list(revoked))
        if self.feedback is not None:
            await self.feedback.commit(numbers)
            self.feedback.forget(numbers)
        self.metrics.forget_partitions(tp.partition for tp in revoked)
        self.pauses.forget(revoked)
        restoring: list[int] = []
        for tp in revoked:
            progress = commits.deactivate(tp)
            if progress is not None:
                self._suspended[tp] = progress.finished if drained else UNKNOWN_POSITION
            else:  # revoked mid-restore: its devices are partly rebuilt
                restoring.append(tp.partition)
        if restoring:
            await self._release(restoring)

    def on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        """Pause the new assignment and start taking it over; the daemon is ready once it has one."""
        self.metrics.rebalances.inc()
        self.metrics.assigned.set(len(assigned))
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))
        if assigned:
            # Synchronously, before the callback yields: no record of these
            # partitions can be fetched before their state is in place.
            self.pauses.pause(assigned, RESTORE)
            self.report_pauses()
        self._takeover = asyncio.create_task(self._take_over(set(assigned)), name="takeover")
        if not self.stopping():
            self.health.ready = True
            self.metrics.ready.set(1)

    async def taken_over(self) -> None:
        """Wait for the takeover of the last assignment to end (at once if there is none)."""
        if self._takeover is not None:
            await asyncio.shield(self._takeover)

    async def cancel_takeover(self) -> None:
        """Stop a takeover in progress (its partitions stay inactive)."""
        task, self._takeover = self._takeover, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _release(self, partitions: Collection[int]) -> int:
        return await release_in_slices(self.registry, partitions, self.scorer.run_job,
                                       self.config.state.slice_devices)

    async def _take_over(self, assigned: set[TopicPartition]) -> None:
        """Resume kept partitions as they are, release moved ones, restore the rest, then resume."""
        try:
            await self._take_over_partitions(assigned)
        except asyncio.CancelledError:
            raise
        except Exception:  # any failure: score cold rather than stall the partitions
            log.exception("taking over partitions failed; they start cold (devices warm up again)")
            cold = [tp for tp in assigned if tp not in self.commits.active]
            self.metrics.state_cold_partitions.inc(len(cold))
            await self._release([tp.partition for tp in cold])
            for tp in cold:
                self._activate(tp, None)

    async def _take_over_partitions(self, assigned: set[TopicPartition]) -> None:
        consumer = self.consumer
        committed: dict[TopicPartition, int | None] = {tp: await consumer.committed(tp) for tp in assigned}
        kept = {tp for tp in assigned if tp in self._suspended and self._suspended[tp] == committed[tp]}
        stale = [tp.partition for tp in self._suspended if tp not in kept]
        self._suspended.clear()
        if stale:
            released = await self._release(stale)
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
        self.commits.activate(tp, committed)
        if self.feedback is not None:
            self.feedback.follow(tp.partition)
        # Still paused while backpressure holds every partition.
        self.pauses.resume([tp], RESTORE)
        self.report_pauses()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, ownership: PartitionOwnership) -> None:
        self.ownership = ownership

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.ownership.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.ownership.on_assigned(list(assigned))
