"""Reading state back: which snapshot each device gets, and the replay that brings it up to date.

On assignment of input partition ``p`` with committed offset ``C``:

1. State partition ``p`` is read from its beginning to its high watermark
   (not ``end_offsets()``: some Kafka-protocol brokers report it wrongly).
   Per device, the *last* usable snapshot wins: fingerprint equal to ours
   (or its base part equal, when the model changed: the device then keeps
   its history and rebuilds its forecaster state, ``rebuilt``) and stamped
   ``offset <= C``. A compacted topic may still hold older
   snapshots of a device; one of those is used when the newest is unusable.
   Snapshots stamped beyond ``C`` reflect readings whose offsets were never
   committed (the owner died between snapshot and commit): restoring them
   would apply those readings twice, so they are ignored (``stale``).
2. Input partition ``p`` is replayed from the lowest restored stamp (at most
   ``max_replay_records`` before ``C``) up to ``C``. A reading at offset
   ``o`` is applied to a device only if ``o >= `` the device's own stamp;
   a device without a usable snapshot gets every replayed reading.
   Alerts raised during replay are dropped: the previous owner published
   them already (with the same deterministic ids).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from streamer.codec import ReadingBatch, Record
from streamer.state.snapshots import Snapshot, base_of, decode_snapshot


class Reader(Protocol):
    """What recovery needs of a group-less consumer (AIOKafkaConsumer fits)."""

    def assign(self, partitions: list[Any]) -> None:
        """Read exactly these partitions."""
        ...

    async def seek_to_beginning(self, *partitions: Any) -> bool:
        """Start at the first offset."""
        ...

    def seek(self, partition: Any, offset: int) -> None:
        """Start at ``offset``."""
        ...

    async def position(self, partition: Any) -> int:
        """The next offset to read."""
        ...

    def highwater(self, partition: Any) -> int | None:
        """The end of the partition as of the last fetch."""
        ...

    async def getmany(self, *partitions: Any, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[Any, list[Any]]:
        """Fetched records per partition."""
        ...


@dataclass
class Selection:
    """The snapshot chosen for each device of one partition, and what was passed over."""

    chosen: dict[str, Snapshot] = field(default_factory=dict)
    # Chosen devices whose snapshot is of another model: only its base is restored.
    base_only: set[str] = field(default_factory=set)
    stale: set[str] = field(default_factory=set)
    mismatch: set[str] = field(default_factory=set)

    def outcomes(self) -> dict[str, int]:
        """Devices per outcome: restored (of which rebuilt), stale (only snapshots beyond C), mismatch."""
        stale = self.stale - self.chosen.keys()
        mismatch = self.mismatch - self.chosen.keys() - stale
        return {"restored": len(self.chosen), "rebuilt": len(self.base_only), "stale": len(stale),
                "mismatch": len(mismatch)}


class SnapshotSelector:
    """Feeds state-topic records in offset order; keeps the last usable snapshot per device."""

    def __init__(self, *, fingerprint: str, committed: int, row_bytes: int,
                 base_bytes: int | None = None) -> None:
        """``base_bytes``: the size of a row's base (None: only whole rows of our fingerprint are usable)."""
        self.fingerprint = fingerprint
        self.base = base_of(fingerprint)
        self.committed = committed
        self.row_bytes = row_bytes
        self.base_bytes = base_bytes
        self.selection = Selection()

    def feed(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the state partition."""
        if key is None:
            return
        device_id = key.decode("utf-8", errors="replace")
        sel = self.selection
        if value is None:  # a tombstone deletes the device's history
            sel.chosen.pop(device_id, None)
            sel.base_only.discard(device_id)
            sel.stale.discard(device_id)
            sel.mismatch.discard(device_id)
            return
        snapshot = decode_snapshot(value)
        whole = (snapshot is not None and snapshot.fingerprint == self.fingerprint
                 and len(snapshot.row) == self.row_bytes)
        base = (not whole and snapshot is not None and self.base_bytes is not None
                and base_of(snapshot.fingerprint) == self.base and len(snapshot.row) >= self.base_bytes)
        if snapshot is None or not (whole or base):
            sel.mismatch.add(device_id)
        elif snapshot.offset > self.committed:
            sel.stale.add(device_id)
        else:
            sel.chosen[device_id] = snapshot
            if base:
                sel.base_only.add(device_id)
            else:
                sel.base_only.discard(device_id)


async def read_partition(reader: Reader, tp: Any, selector: SnapshotSelector, *,
                         deadline: float, max_records: int = 10_000) -> int:
    """Feed every record of ``tp`` (from the start to the high watermark) to ``selector``.

    Returns:
        Records read.

    Raises:
        TimeoutError: ``deadline`` (``time.monotonic()``) passed first.
    """
    reader.assign([tp])
    await reader.seek_to_beginning(tp)
    count = 0
    while True:
        batches = await reader.getmany(tp, timeout_ms=200, max_records=max_records)
        for record in batches.get(tp, []):
            selector.feed(record.key, record.value)
            count += 1
        highwater = reader.highwater(tp)
        if highwater is not None and await reader.position(tp) >= highwater:
            return count
        if time.monotonic() > deadline:
            raise TimeoutError(f"reading {tp} did not reach its end in time")


async def fetch_range(reader: Reader, tp: Any, start: int, end: int, *, deadline: float,
                      max_records: int) -> AsyncIterator[list[Any]]:
    """Yield lists of records of ``tp`` with offsets in ``[start, end)``, in order.

    An async generator; a start below the log start is moved up by the
    reader's offset reset (``earliest``).

    Raises:
        TimeoutError: ``deadline`` passed before ``end`` was reached.
    """
    reader.assign([tp])
    reader.seek(tp, start)
    while (position := await reader.position(tp)) < end:
        if time.monotonic() > deadline:
            raise TimeoutError(f"replaying {tp} did not reach offset {end} in time")
        batches = await reader.getmany(tp, timeout_ms=200, max_records=max_records)
        records = [r for r in batches.get(tp, []) if r.offset < end]
        if records:
            yield records
            continue
        # ``end`` (the committed offset) may lie beyond the log end, e.g. after
        # the log was truncated: stop at the high watermark instead of waiting
        # for records that will never come.
        highwater = reader.highwater(tp)
        if highwater is not None and position >= highwater:
            return


def replay_filter(batch: ReadingBatch, records: list[Record], stamps: dict[str, int]) -> ReadingBatch:
    """The readings of ``batch`` each device has not seen: offset >= its stamp (-1 when it has none)."""
    if not len(batch):
        return batch
    offsets = np.fromiter((records[i].offset for i in batch.record_index.tolist()), np.int64, len(batch))
    floor = np.fromiter((stamps.get(d, -1) for d in batch.device_ids), np.int64, len(batch))
    keep = offsets >= floor
    if keep.all():
        return batch
    return subset(batch, np.flatnonzero(keep))


def subset(batch: ReadingBatch, rows: npt.NDArray[np.intp]) -> ReadingBatch:
    """The rows ``rows`` of ``batch``."""
    ids = batch.device_ids
    return ReadingBatch(
        device_ids=[ids[i] for i in rows.tolist()],
        ts_ms=batch.ts_ms[rows],
        values=batch.values[rows],
        fetched_at=batch.fetched_at[rows],
        record_index=batch.record_index[rows],
    )


def replay_start(stamps: Iterable[int], committed: int, max_replay: int) -> int:
    """Where replay of a partition begins: the lowest restored stamp, at most ``max_replay`` before C.

    With no restored device, the last ``max_replay`` records rebuild what they can.

    >>> replay_start([120, 90], committed=150, max_replay=1000)
    90
    >>> replay_start([120, 90], committed=150, max_replay=40)
    110
    >>> replay_start([], committed=150, max_replay=100)
    50
    """
    lowest = min(stamps, default=0)
    return max(lowest, committed - max_replay, 0)
