"""The commit protocol: finished offsets per partition, the acknowledgement queue, snapshot-then-commit.

Delivery is at least once (duplicates removable by alert id):

- the commit position of a partition is its *frontier*: every record
  before it was scored or dead-lettered and every alert it caused was
  acknowledged by the broker. Micro-batches are scored one at a time, in
  fetch order, and a batch is marked finished only as a whole, after its
  acknowledgements arrived and those of every batch scored before it, so a
  partition's finished offsets are always contiguous and the frontier is
  simply the end of its last finished batch (no gap tracking as in faust's
  acked-offset sets is needed). A batch that fails (scoring or publishing,
  whatever partitions it spans) marks nothing finished: none of its offsets
  is committed, the daemon exits non-zero and the next owner reprocesses it;
- the frontier is the offset after the last *record* of a batch, so
  transaction markers and compaction gaps after it are skipped on the next
  fetch rather than waited for;
- device state is snapshotted *between* batches (under the scoring lock,
  once every scored batch is acknowledged), so each partition's snapshot is
  stamped with exactly its finished offset, and written to the state topic
  before the offsets are committed: the committed offset is then at or
  beyond every snapshot's stamp. A batch that failed midway leaves the state
  *torn* (ahead of its offsets): it is never snapshotted again.

Where each active partition stands is one :class:`PartitionProgress` record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection, KeysView, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streamer.endpoints import Health
from streamer.logs import event
from streamer.metrics import Metrics
from streamer.runtime.batches import Fetched, ScoredBatch
from streamer.runtime.scorer import Scorer
from streamer.runtime.seams import SYSTEM_CLOCK, Clock, OffsetCommitter
from streamer.state.manager import StateManager

log = logging.getLogger(__name__)


@dataclass
class PartitionProgress:
    """Where one active partition stands."""

    finished: int | None = None  # next offset to commit: every record before it is done
    committed: int | None = None  # the last offset committed (or found committed)
    fetched: int | None = None  # next offset after the last record fetched
    beyond_end_since: float | None = None  # monotonic time its position was first seen past the log end


class CommitProtocol:
    """Finished offsets of the active partitions, their commits, and snapshots in between."""

    def __init__(self, metrics: Metrics, health: Health, *, max_unacked_batches: int,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.metrics = metrics
        self.health = health
        self.clock = clock
        self.committer: OffsetCommitter | None = None  # the group consumer, once started
        self._progress: dict[TopicPartition, PartitionProgress] = {}
        self._commit_lock = asyncio.Lock()
        # Held while a batch is scored and handed to the sink: a snapshot
        # taken under it sees each partition's state at its finished offset.
        self._score_lock = asyncio.Lock()
        self._torn = False
        # Scored batches awaiting their acknowledgements, in fetch order; its
        # join() returns once every batch put so far is finished.
        self._unacked: asyncio.Queue[ScoredBatch | None] = asyncio.Queue()
        self._room = asyncio.Semaphore(max_unacked_batches)

    # ------------------------------------------------------------- partitions
    @property
    def active(self) -> KeysView[TopicPartition]:
        """The partitions whose state is in place: scored, snapshotted and committed (a live view)."""
        return self._progress.keys()

    def activate(self, tp: TopicPartition, committed: int | None) -> None:
        """``tp``'s state is in place as of its ``committed`` offset (None: the group has none)."""
        self._progress[tp] = PartitionProgress(finished=committed, committed=committed)

    def deactivate(self, tp: TopicPartition) -> PartitionProgress | None:
        """Stop tracking ``tp``; where it stood, if it was active."""
        return self._progress.pop(tp, None)

    def progress(self, tp: TopicPartition) -> PartitionProgress | None:
        """Where active ``tp`` stands (None: not active)."""
        return self._progress.get(tp)

    def finished(self, tp: TopicPartition) -> int | None:
        """The next offset of ``tp`` to commit: every record before it is done."""
        progress = self._progress.get(tp)
        return None if progress is None else progress.finished

    def committed_offsets(self) -> dict[TopicPartition, int]:
        """The last committed offset of every active partition that has one."""
        return {tp: p.committed for tp, p in self._progress.items() if p.committed is not None}

    def fetched(self, ends: Mapping[TopicPartition, int]) -> None:
        """Records up to ``ends`` (next offset, per partition) were fetched."""
        for tp, end in ends.items():
            progress = self._progress.get(tp)
            if progress is not None:
                progress.fetched = end

    def waiting(self) -> bool:
        """Whether fetched records of an active partition wait for their offsets to be committed."""
        return any(p.fetched is not None and p.fetched != p.committed for p in self._progress.values())

    # ---------------------------------------------------------------- batches
    @property
    def torn(self) -> bool:
        """Whether a batch failed midway: device state is ahead of the finished offsets for good."""
        return self._torn

    @contextlib.asynccontextmanager
    async def scoring(self) -> AsyncIterator[None]:
        """Hold while a batch is scored and handed over: snapshots wait; a failure tears the state."""
        async with self._score_lock:
            try:
                yield
            except BaseException:
                self._torn = True
                raise

    async def reserve(self) -> None:
        """Wait for room for one more unacknowledged batch (``batching.max_unacked_batches``)."""
        await self._room.acquire()

    def release(self) -> None:
        """Give back the room of a batch that is finished (or had nothing to score)."""
        self._room.release()

    def scored(self, batch: ScoredBatch) -> None:
        """Queue a scored batch for its acknowledgements (call inside :meth:`scoring`)."""
        self._unacked.put_nowait(batch)

    def no_more_batches(self) -> None:
        """The scoring side is closed and drained: :meth:`acknowledge` ends after the rest."""
        self._unacked.put_nowait(None)

    async def acknowledge(self, on_finished: Callable[[ScoredBatch], None]) -> None:
        """Mark scored batches finished in fetch order as their acknowledgements arrive.

        A batch is finished only once it and every batch scored before it are
        acknowledged, so the finished offsets (what is committed) never pass
        an alert the broker has not taken. ``on_finished`` is called for each.
        """
        while True:
            batch = await self._unacked.get()
            if batch is None:
                self._unacked.task_done()
                return
            try:
                await batch.acks
            except BaseException:
                self._torn = True  # scored, but its offsets will never be finished
                raise
            self._mark_finished(batch.items)
            self._unacked.task_done()
            on_finished(batch)

    def _mark_finished(self, items: Sequence[Fetched]) -> None:
        # Items are scored in fetch order, so later ends supersede earlier ones.
        progress = self._progress
        for item in items:
            for tp, end in item.ends.items():
                if tp in progress:
                    progress[tp].finished = end

    # ---------------------------------------------------------------- commits
    async def commit(self, partitions: Collection[TopicPartition] | None = None) -> None:
        """Commit finished offsets (of ``partitions``, or all) that moved since the last commit."""
        async with self._commit_lock:
            offsets = {tp: p.finished for tp, p in self._progress.items()
                       if p.finished is not None and p.finished != p.committed
                       and (partitions is None or tp in partitions)}
            if not offsets or self.committer is None:
                return
            try:
                await self.committer.commit(offsets)
            except KafkaError as exc:
                # Not fatal: the offsets stay pending and the next commit retries.
                # If the partitions moved away, the new owner replays them.
                self.metrics.commits.labels("failed").inc()
                log.warning("commit failed (%s); will retry", exc, extra=event("commit_failed"))
                return
            for tp, offset in offsets.items():
                if (progress := self._progress.get(tp)) is not None:
                    progress.committed = offset
            self.health.progressed()
            self.metrics.commits.labels("ok").inc()
            self.metrics.last_commit.set(self.clock.time())

    # -------------------------------------------------------------- snapshots
    async def snapshot(self, partitions: Collection[TopicPartition], state: StateManager | None,
                       scorer: Scorer) -> None:
        """Snapshot the changed devices of ``partitions`` and wait for the state topic's acks.

        Taken between batches, once every scored batch is acknowledged, so
        each device is stamped with the finished offset its partition's state
        reflects. Call before committing.
        """
        if state is None or self._torn:
            return
        async with self._score_lock:
            # State holds every scored batch; the stamps must be offsets whose work is finished.
            await self._unacked.join()
            if self._torn:
                return
            positions = {tp.partition: p.finished for tp in partitions
                         if (p := self._progress.get(tp)) is not None and p.finished is not None}
            if not positions:
                return
            taken = await scorer.run_job(lambda: state.take(positions))
        try:
            await state.write(taken)
        except KafkaError as exc:
            # Not fatal: the devices stay changed and the next round retries;
            # meanwhile a new owner restores older snapshots and replays more.
            self.metrics.state_snapshot_failures.inc()
            log.warning("snapshot of %d devices not acknowledged (%s)", len(taken.values), exc)
