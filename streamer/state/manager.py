"""Per-device detector state that moves with its partition.

The daemon owns *when*; this module owns *how*:

- :meth:`StateManager.take` (on the scorer, between batches) turns
  every changed device of the given partitions into a snapshot stamped with
  the offset its partition's state reflects;
- :meth:`StateManager.write` sends them to the compacted state topic, the
  snapshot of input partition ``p`` to state partition ``p`` (explicit
  partition, keyed by device id), waits for every acknowledgement, then
  marks the devices unchanged;
- :meth:`StateManager.restore_partition` rebuilds a newly assigned
  partition's devices (:mod:`streamer.state.recovery`);
- :meth:`StateManager.release` forgets a partition's devices.

Every read or write of the slot table goes through ``run`` (the daemon's
scorer: its event loop or its single scoring thread, ``runtime.scoring``), so
state is never touched by two threads at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from aiokafka import TopicPartition

from streamer.codec import ReadingBatch, ReadingDecoder, Record
from streamer.config import Config
from streamer.kafka.batching import BatchingProducer, send_records
from streamer.state.extra_rows import ExtraRows
from streamer.state.recovery import (
    Reader,
    SnapshotSelector,
    fetch_range,
    read_partition,
    replay_filter,
    replay_start,
)
from streamer.state.registry import NO_SLOT, DeviceRegistry
from streamer.state.snapshots import (
    FORMAT,
    RowSchema,
    Snapshot,
    encode_snapshot,
    put_base_rows,
    put_rows,
    take_rows,
)
from streamer.vocabulary import PauseCause

log = logging.getLogger(__name__)

T = TypeVar("T")
IndexArray = npt.NDArray[np.intp]
# Slots per job when a job scans the whole table (which devices changed, which
# belong to a partition): a few milliseconds of the scorer each.
SCAN_ROWS = 131_072
Int32Array = npt.NDArray[np.int32]


class ScoredFleet(Protocol):
    """What the state manager needs of the scoring pipeline (the daemon hands its pipeline in)."""

    @property
    def registry(self) -> DeviceRegistry:
        """The devices and their slot table."""
        ...

    def extra_rows(self) -> ExtraRows | None:
        """Per-slot state outside the slot table (the stateful LSTM's states), if any."""
        ...

    def state_identity(self) -> dict[str, str]:
        """What else must match for a snapshot row to mean the same thing (model, method, channels)."""
        ...

    def model_fields(self) -> tuple[str, ...]:
        """The slot-table fields of the forecaster (the model part of a row)."""
        ...

    def rebuild_model(self, slots: IndexArray) -> None:
        """Rebuild the forecaster state of ``slots`` from their ring buffers (restored without it)."""
        ...

    def restored(self, slots: IndexArray) -> None:
        """``slots`` were just written from snapshots."""
        ...

    def replay(self, batch: ReadingBatch, partitions: Int32Array) -> int:
        """Score replayed readings (alerts are not published); returns the readings applied."""
        ...


class Counting(Protocol):
    """A counter (prometheus_client's ``Counter`` or a child of one)."""

    def inc(self, amount: float = 1) -> None:
        """Add ``amount``."""
        ...


class LabelledCounting(Protocol):
    """A counter with one label."""

    def labels(self, *values: str) -> Counting:
        """The child counter of ``values``."""
        ...


class Observing(Protocol):
    """A histogram."""

    def observe(self, amount: float) -> None:
        """Record one observation."""
        ...


class StateMetrics(Protocol):
    """The metrics the state manager updates (``streamer.metrics.Metrics`` has them)."""

    @property
    def state_snapshots(self) -> Counting:
        """Device snapshots written."""
        ...

    @property
    def state_restored(self) -> LabelledCounting:
        """Snapshots read on assignment, by outcome."""
        ...

    @property
    def state_replayed(self) -> Counting:
        """Readings replayed after a restore."""
        ...

    @property
    def state_restore_seconds(self) -> Observing:
        """Seconds per partition restore."""
        ...


class Runner(Protocol):
    """Runs a function on the daemon's scorer (its scoring thread), timed as a scoring pause of ``job``."""

    def __call__(self, fn: Callable[[], T], job: PauseCause, /) -> Awaitable[T]:
        """``fn()``'s result, computed on the scorer."""
        ...


@dataclass(frozen=True)
class Taken:
    """Snapshots taken in one round, not yet written."""

    slots: IndexArray
    device_ids: list[str]
    partitions: list[int]
    seen: npt.NDArray[np.int64]  # each device's version (DeviceRegistry.versions) when taken
    values: list[bytes]


@dataclass(frozen=True)
class RestoreReport:
    """What restoring one partition did."""

    partition: int
    committed: int
    outcomes: dict[str, int]
    replay_from: int
    replayed: int
    seconds: float


class StateManager:
    """Snapshots devices to the state topic and restores them on assignment."""

    def __init__(self, fleet: ScoredFleet, config: Config, *, producer: BatchingProducer,
                 run: Runner, metrics: StateMetrics) -> None:
        self.fleet = fleet
        self.config = config
        self.topic = config.kafka.state_topic_name()
        self.input_topic = config.kafka.input_topic
        self.producer = producer
        self.run = run
        self.metrics = metrics
        registry = fleet.registry
        self.registry = registry
        self.extras = fleet.extra_rows()
        self.schema = RowSchema.build(registry.table, self.extras, fleet.state_identity(),
                                      fleet.model_fields())
        readings = config.readings
        # Its own decoder: replay may decode on the scoring thread while the
        # fetch loop decodes on the event loop.
        self.decoder = ReadingDecoder(readings.channels, device_id_pattern=readings.device_id_pattern,
                                      max_message_bytes=readings.max_message_bytes,
                                      max_future_ms=readings.max_future_ms)
        self._write_lock = asyncio.Lock()

    def model_changed(self) -> None:
        """The fleet swapped its model: rows from now on have its layout, and every device is changed.

        Call on the scorer between batches. Marking every device changed
        makes the next rounds rewrite them all under the new fingerprint, so
        a restart soon finds whole rows again (until then, rows of the old
        model restore their base and rebuild the forecaster).
        """
        fleet = self.fleet
        self.extras = fleet.extra_rows()
        self.schema = RowSchema.build(self.registry.table, self.extras, fleet.state_identity(),
                                      fleet.model_fields())
        table = self.registry.table
        table["reg_edits"][table["reg_live"]] += 1

    # ---------------------------------------------------------------- snapshots
    @property
    def slice_devices(self) -> int:
        """Devices per slice of a snapshot, restore or release (``state.slice_devices``)."""
        return self.config.state.slice_devices

    async def changed(self, partitions: Collection[int]) -> IndexArray:
        """Slots of the devices of ``partitions`` that changed since their last snapshot.

        The table is scanned :data:`SCAN_ROWS` slots per job on the scorer.
        """
        return await scan_table(self.registry, functools.partial(self.registry.changed_slots, partitions),
                                self.run, "snapshot")

    def take(self, positions: Mapping[int, int], candidates: IndexArray | None = None) -> Taken:
        """Snapshot the changed devices of the partitions in ``positions`` (of ``candidates``, or all).

        Call on the scorer while no batch is being scored, so each
        partition's state reflects exactly the records before its position.
        A round can take its devices in slices, each at its own positions:
        a candidate slot that was released, reused by another device, or no
        longer changed since :meth:`changed` listed it is judged as it is now.

        Args:
            positions: Input partition → offset its devices' state reflects.
            candidates: Slots to consider (a slice of :meth:`changed`).
        """
        registry = self.registry
        table = registry.table
        if candidates is None:
            slots = registry.changed_slots(positions.keys())
        else:
            slots = registry.changed_among(candidates, positions.keys())
        device_ids = registry.device_ids(slots)
        partitions = table["reg_partition"][slots].tolist()
        seen = self.registry.versions(slots)
        rows = take_rows(table, self.extras, self.schema, slots)
        now_ms = int(time.time() * 1000)
        fingerprint = self.schema.fingerprint
        values = [
            encode_snapshot(Snapshot(FORMAT, fingerprint, p, positions[p], now_ms, row))
            for p, row in zip(partitions, rows, strict=True)
        ]
        return Taken(slots, device_ids, partitions, seen, values)

    async def write(self, taken: Taken) -> None:
        """Send the snapshots, wait for every acknowledgement, then mark the devices unchanged.

        Raises:
            KafkaError: A snapshot was not acknowledged; its device stays
                changed and is taken again next round.
        """
        if not taken.values:
            return
        records = ((partition, device_id.encode(), value)
                   for device_id, partition, value in zip(taken.device_ids, taken.partitions, taken.values,
                                                          strict=True))
        async with self._write_lock:
            await asyncio.gather(*await send_records(self.producer, self.topic, records))
        await self.run(lambda: self._mark_written(taken), "snapshot")
        self.metrics.state_snapshots.inc(len(taken.values))

    def _mark_written(self, taken: Taken) -> None:
        registry = self.registry
        # A slot may have been released and reused since it was taken.
        same = np.fromiter((a == b for a, b in zip(registry.device_ids(taken.slots), taken.device_ids,
                                                     strict=True)), bool, len(taken.slots))
        registry.table["reg_snapshot_seen"][taken.slots[same]] = taken.seen[same]

    # ------------------------------------------------------------------ release
    async def release(self, partitions: Collection[int]) -> int:
        """Forget the devices of ``partitions``, a slice at a time; returns how many."""
        return await release_in_slices(self.registry, partitions, self.run, self.slice_devices)

    # ------------------------------------------------------------------ restore
    async def restore_partition(self, reader: Reader, partition: int, committed: int, *,
                                deadline: float) -> RestoreReport:
        """Rebuild the devices of input ``partition`` as of offset ``committed``.

        Args:
            reader: A started group-less consumer (it is reassigned here).
            partition: The input partition (its snapshots are in the same
                state partition).
            committed: The group's committed offset: the next record the
                daemon will score.
            deadline: ``time.monotonic()`` by which to finish.

        Raises:
            TimeoutError: Not finished by ``deadline``; the partition's devices
                are then partly restored and must be released.
        """
        started = time.perf_counter()
        state = self.config.state
        await self.release([partition])
        selector = SnapshotSelector(fingerprint=self.schema.fingerprint, committed=committed,
                                    row_bytes=self.schema.row_bytes, base_bytes=self.schema.base_bytes)
        await read_partition(reader, TopicPartition(self.topic, partition), selector, deadline=deadline,
                             max_records=self.slice_devices)
        selection = selector.selection
        stamps: dict[str, int] = {}
        chosen = list(selection.chosen.items())
        size = self.slice_devices
        for start in range(0, len(chosen), size):
            part = dict(chosen[start:start + size])
            rebuild = selection.base_only & part.keys()
            stamps.update(await self.run(functools.partial(self.apply, partition, part, rebuild), "restore"))
        outcomes = selection.outcomes()
        outcomes["restored"] = len(stamps)
        for outcome, count in outcomes.items():
            self.metrics.state_restored.labels(outcome).inc(count)
        start = replay_start(stamps.values(), committed, state.max_replay_records)
        replayed = 0
        max_records = self.config.batching.max_batch
        async for records in fetch_range(reader, TopicPartition(self.input_topic, partition), start,
                                         committed, deadline=deadline,
                                         max_records=min(max_records, self.slice_devices)):
            applied = await self.run(functools.partial(self.replay, partition, records, stamps), "replay")
            replayed += applied
            self.metrics.state_replayed.inc(applied)
        seconds = time.perf_counter() - started
        self.metrics.state_restore_seconds.observe(seconds)
        report = RestoreReport(partition, committed, outcomes, start, replayed, seconds)
        log.info("partition %d restored to offset %d in %.2fs: %s; replayed %d readings from offset %d",
                 partition, committed, seconds, outcomes, replayed, start)
        return report

    def apply(self, partition: int, chosen: Mapping[str, Snapshot],
              base_only: Collection[str] = ()) -> dict[str, int]:
        """Write the chosen snapshots into new slots; returns the restored devices' stamps.

        ``base_only``: devices whose snapshot is of another model; their base
        is written and their forecaster rebuilt from the restored ring buffer.
        """
        registry = self.registry
        # A device already live here reads from another partition this daemon
        # owns (it changed partition): its live state wins.
        fresh = [device_id for device_id in chosen if registry.slot(device_id) is None]
        slots = registry.resolve(fresh, np.full(len(fresh), partition, np.int32))
        admitted = slots != NO_SLOT
        ids = [device_id for device_id, ok in zip(fresh, admitted.tolist(), strict=True) if ok]
        slots = slots[admitted]
        whole = np.array([device_id not in base_only for device_id in ids], dtype=bool)
        put_rows(registry.table, self.extras, self.schema, slots[whole],
                 [chosen[d].row for d, ok in zip(ids, whole.tolist(), strict=True) if ok])
        if not whole.all():
            put_base_rows(registry.table, self.schema, slots[~whole],
                          [chosen[d].row for d, ok in zip(ids, whole.tolist(), strict=True) if not ok])
            self.fleet.rebuild_model(slots[~whole])
        self.fleet.restored(slots)
        table = registry.table
        table["reg_snapshot_seen"][slots] = self.registry.versions(slots)  # as on the state topic
        return {device_id: chosen[device_id].offset for device_id in ids}

    def replay(self, partition: int, records: list[Record], stamps: Mapping[str, int]) -> int:
        """Apply replayed records to the devices that have not seen them; returns readings applied."""
        batch = replay_filter(self.decoder.decode(records).readings, records, dict(stamps))
        if not len(batch):
            return 0
        return self.fleet.replay(batch, np.full(len(batch), partition, np.int32))


def release_partitions(registry: DeviceRegistry, partitions: Collection[int]) -> int:
    """Release every device of ``partitions`` from ``registry`` at once; returns how many."""
    slots = registry.slots_of_partitions(partitions)
    registry.release(slots)
    return len(slots)


async def scan_table(registry: DeviceRegistry, scan: Callable[[int, int], IndexArray], run: Runner,
                     cause: PauseCause) -> IndexArray:
    """``scan(start, stop)`` over every slot of ``registry``, :data:`SCAN_ROWS` slots per job on the scorer.

    A scan of a million slots at once held the scorer for tens of milliseconds
    (benchmarks/performance.md, "Fleet scale"); each job here is about one.
    """
    found = [await run(functools.partial(scan, start, start + SCAN_ROWS), cause)
             for start in range(0, registry.high_water, SCAN_ROWS)]
    return np.concatenate(found) if found else np.empty(0, np.intp)


async def release_in_slices(registry: DeviceRegistry, partitions: Collection[int], run: Runner,
                            slice_devices: int) -> int:
    """Release every device of ``partitions``, ``slice_devices`` per job on the scorer; returns how many.

    Call only while no record of ``partitions`` is scored (they are not
    active), so no device of theirs is admitted between slices.
    """
    if not partitions:
        return 0
    slots = await scan_table(registry, functools.partial(registry.slots_of_partitions, partitions), run,
                             "release")
    for start in range(0, len(slots), slice_devices):
        await run(functools.partial(registry.release, slots[start:start + slice_devices]), "release")
    return len(slots)
