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
- device state is snapshotted *between* batches, a slice of devices at a
  time (``state.slice_devices``) so that scoring goes on between slices:
  each slice is taken under the scoring lock, so its devices reflect
  exactly the batches scored before it, and is stamped with each
  partition's *scored* offset (the end of its last scored batch). A slice
  is written to the state topic only once those batches are finished, so
  every stamp on the topic is at or before its partition's finished offset
  and the commit that follows covers it. A batch that failed midway leaves
  the state *torn* (ahead of its offsets): it is never snapshotted again.

Where each active partition stands is one :class:`PartitionProgress` record.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Collection, KeysView, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streamer.endpoints import Health
from streamer.logs import event
from streamer.metrics import Metrics
from streamer.runtime.batches import Fetched, ScoredBatch
from streamer.runtime.scorer import Scorer
from streamer.runtime.seams import SYSTEM_CLOCK, Clock, OffsetCommitter
from streamer.state.manager import IndexArray, StateManager, Taken

log = logging.getLogger(__name__)

# Snapshot slices taken and not yet written (waiting for their batches'
# acknowledgements, or for the state topic, which takes one write at a time):
# the next slice is taken meanwhile.
SNAPSHOT_WRITES_IN_FLIGHT = 4


class RoundWatcher(Protocol):
    """Told when a snapshot round starts and when all of it is written (operator feedback's commits)."""

    def round_started(self, partitions: Collection[int]) -> dict[int, int]:
        """Called before the round lists its changed devices; returns what to hand back when written."""
        ...

    def round_written(self, applied: Mapping[int, int]) -> None:
        """Every slice of the round was written: what :meth:`round_started` returned is covered."""
        ...


@dataclass
class PartitionProgress:
    """Where one active partition stands."""

    finished: int | None = None  # next offset to commit: every record before it is done
    scored: int | None = None  # next offset after the last scored batch: what device state reflects
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
        self._batches_scored = 0
        self._batches_finished = 0
        self._batch_finished = asyncio.Event()  # set whenever a batch is finished or the state tears
        # One snapshot round at a time: a round asked for during another (a revoke, the final one)
        # waits for it and then takes only what changed since.
        self._round_lock = asyncio.Lock()
        self._urgent_rounds = 0
        self._hurry = asyncio.Event()  # set while an urgent round waits or runs: spread rounds stop pacing
        self.round_watchers: list[RoundWatcher] = []

    # ------------------------------------------------------------- partitions
    @property
    def active(self) -> KeysView[TopicPartition]:
        """The partitions whose state is in place: scored, snapshotted and committed (a live view)."""
        return self._progress.keys()

    def activate(self, tp: TopicPartition, committed: int | None) -> None:
        """``tp``'s state is in place as of its ``committed`` offset (None: the group has none)."""
        self._progress[tp] = PartitionProgress(finished=committed, committed=committed, scored=committed)

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

    @contextlib.asynccontextmanager
    async def between_batches(self) -> AsyncIterator[None]:
        """Hold while device state is changed outside a batch (operator feedback): batches and slices wait."""
        async with self._score_lock:
            yield

    async def reserve(self) -> None:
        """Wait for room for one more unacknowledged batch (``batching.max_unacked_batches``)."""
        await self._room.acquire()

    def release(self) -> None:
        """Give back the room of a batch that is finished (or had nothing to score)."""
        self._room.release()

    def scored(self, batch: ScoredBatch) -> None:
        """Queue a scored batch for its acknowledgements (call inside :meth:`scoring`)."""
        progress = self._progress
        for item in batch.items:
            for tp, end in item.ends.items():
                if tp in progress:
                    progress[tp].scored = end
        self._batches_scored += 1
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
                self._batch_finished.set()
                raise
            self._mark_finished(batch.items)
            self._batches_finished += 1
            self._batch_finished.set()
            self._unacked.task_done()
            on_finished(batch)

    async def _finished_through(self, batches: int) -> bool:
        """Wait until the first ``batches`` scored batches are finished; False if the state tore."""
        while self._batches_finished < batches and not self._torn:
            self._batch_finished.clear()
            await self._batch_finished.wait()
        return not self._torn

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
                       scorer: Scorer, *, spread_s: float = 0.0) -> None:
        """Snapshot the changed devices of ``partitions`` and wait for the state topic's acks.

        A slice of ``state.slice_devices`` devices at a time, each taken
        between two batches and stamped with the offsets its devices'
        partitions were scored to; a slice is written once the batches it
        reflects are finished (their alerts acknowledged). Up to
        :data:`SNAPSHOT_WRITES_IN_FLIGHT` slices wait to be written while the
        next is taken. Call before committing: the commit then covers every
        stamp written.

        ``spread_s``: spread the slices over this long (the periodic round),
        so the state topic takes a steady trickle rather than a burst that
        slows the broker for everyone; a round asked for meanwhile without
        it (a revoke, shutdown) makes the spread round hurry and then runs.
        """
        if state is None or self._torn:
            return
        urgent = spread_s <= 0
        if urgent:
            self._urgent_rounds += 1
            self._hurry.set()
        try:
            async with self._round_lock:
                await self._snapshot_round(partitions, state, scorer, spread_s)
        finally:
            if urgent:
                self._urgent_rounds -= 1
                if not self._urgent_rounds:
                    self._hurry.clear()

    async def _snapshot_round(self, partitions: Collection[TopicPartition], state: StateManager,
                              scorer: Scorer, spread_s: float) -> None:
        started = self.clock.monotonic()
        # Devices that change after this scan are taken by the next round.
        owned = {tp.partition for tp in partitions if tp in self._progress}
        if not owned:
            return
        noted = [(watcher, watcher.round_started(owned)) for watcher in self.round_watchers]
        changed = await state.changed(owned)
        written = await self._snapshot_slices(partitions, state, scorer, changed, spread_s)
        if written:
            for watcher, applied in noted:
                watcher.round_written(applied)
        if written and len(changed):
            seconds = self.clock.monotonic() - started
            self.metrics.state_snapshot_round_seconds.observe(seconds)
            log.info("snapshot round: %d devices of %d partitions in %.2fs (%d per slice)",
                     len(changed), len(owned), seconds, state.slice_devices)

    async def _snapshot_slices(self, partitions: Collection[TopicPartition], state: StateManager,
                               scorer: Scorer, changed: IndexArray, spread_s: float) -> bool:
        """Take and write ``changed`` a slice at a time; whether every slice was written."""
        writes: set[asyncio.Task[bool]] = set()
        size = state.slice_devices
        slices = -(-len(changed) // size)
        started = self.clock.monotonic()
        try:
            for index, start in enumerate(range(0, len(changed), size)):
                await self._pace(started + spread_s * index / max(slices, 1))
                candidates = changed[start:start + size]
                async with self._score_lock:
                    if self._torn:
                        return False
                    positions = {tp.partition: p.scored for tp in partitions
                                 if (p := self._progress.get(tp)) is not None and p.scored is not None}
                    if not positions:
                        return False
                    reflects = self._batches_scored
                    taken = await scorer.run_job(functools.partial(state.take, positions, candidates),
                                                 "snapshot")
                if not taken.values:
                    continue
                if len(writes) >= SNAPSHOT_WRITES_IN_FLIGHT:
                    done, writes = await asyncio.wait(writes, return_when=asyncio.FIRST_COMPLETED)
                    if not all(task.result() for task in done):
                        return False
                writes.add(asyncio.create_task(self._write_slice(state, taken, reflects)))
            written = all(await asyncio.gather(*writes))
            writes.clear()
            return written
        finally:
            for task in writes:
                task.cancel()

    async def _pace(self, not_before: float) -> None:
        """Wait until ``not_before`` (monotonic), or until an urgent round is asked for."""
        wait = not_before - self.clock.monotonic()
        if wait > 0 and not self._hurry.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), wait)

    async def _write_slice(self, state: StateManager, taken: Taken, reflects: int) -> bool:
        """Write one slice once the first ``reflects`` scored batches are finished; whether it was."""
        if not await self._finished_through(reflects):
            return False  # those batches will never be finished: their state must not be stamped
        try:
            await state.write(taken)
        except KafkaError as exc:
            # Not fatal: the devices stay changed and the next round retries;
            # meanwhile a new owner restores older snapshots and replays more.
            self.metrics.state_snapshot_failures.inc()
            log.warning("snapshot of %d devices not acknowledged (%s)", len(taken.values), exc)
            return False
        return True
