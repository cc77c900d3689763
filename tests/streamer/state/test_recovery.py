"""Which snapshot each device gets back, and which replayed readings it is given."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from streamer.codec import ReadingBatch
from streamer.state.recovery import SnapshotSelector, fetch_range, replay_filter, replay_start, subset
from streamer.state.snapshots import FORMAT, Snapshot, encode_snapshot
from tests.fakes import FakeRecord

FINGERPRINT = "f" * 16
ROW = 8


def snap(offset: int, *, fingerprint: str = FINGERPRINT, row: bytes = b"r" * ROW) -> bytes:
    return encode_snapshot(Snapshot(FORMAT, fingerprint, 0, offset, 0, row))


def selector(committed: int = 100) -> SnapshotSelector:
    return SnapshotSelector(fingerprint=FINGERPRINT, committed=committed, row_bytes=ROW)


def test_the_last_usable_snapshot_of_each_device_wins() -> None:
    sel = selector()
    sel.feed(b"a", snap(10))
    sel.feed(b"b", snap(20))
    sel.feed(b"a", snap(30))
    chosen = sel.selection.chosen
    assert {d: s.offset for d, s in chosen.items()} == {"a": 30, "b": 20}
    assert sel.selection.outcomes() == {"restored": 2, "rebuilt": 0, "stale": 0, "mismatch": 0}


def test_snapshots_beyond_the_committed_offset_are_ignored() -> None:
    sel = selector(committed=100)
    sel.feed(b"a", snap(100))  # reflects exactly the committed position: usable
    sel.feed(b"b", snap(101))  # reflects an uncommitted reading
    assert set(sel.selection.chosen) == {"a"}
    assert sel.selection.outcomes() == {"restored": 1, "rebuilt": 0, "stale": 1, "mismatch": 0}


def test_an_older_usable_snapshot_is_used_when_the_newest_is_stale() -> None:
    sel = selector(committed=100)
    sel.feed(b"a", snap(90))
    sel.feed(b"a", snap(150))  # its commit never happened
    assert sel.selection.chosen["a"].offset == 90
    assert sel.selection.outcomes() == {"restored": 1, "rebuilt": 0, "stale": 0, "mismatch": 0}


def test_other_fingerprints_wrong_sizes_and_garbage_are_mismatches() -> None:
    sel = selector()
    sel.feed(b"a", snap(10, fingerprint="0" * 16))
    sel.feed(b"b", snap(10, row=b"short"))
    sel.feed(b"c", b"\xc1 not a snapshot")
    sel.feed(b"d", snap(10))
    assert set(sel.selection.chosen) == {"d"}
    assert sel.selection.outcomes() == {"restored": 1, "rebuilt": 0, "stale": 0, "mismatch": 3}


def test_a_snapshot_of_another_model_gives_its_base_and_the_latest_snapshot_still_wins() -> None:
    ours = "b" * 16 + "." + "m" * 16
    sel = SnapshotSelector(fingerprint=ours, committed=100, row_bytes=ROW, base_bytes=4)
    sel.feed(b"a", snap(10, fingerprint="b" * 16 + "." + "o" * 16, row=b"r" * 12))  # other model, bigger
    sel.feed(b"b", snap(10, fingerprint="b" * 16 + "." + "o" * 16, row=b"r" * 4))
    sel.feed(b"b", snap(20, fingerprint=ours))  # then a whole row of ours
    sel.feed(b"c", snap(10, fingerprint="x" * 16 + "." + "m" * 16))  # another base: unusable
    sel.feed(b"d", snap(10, fingerprint="b" * 16 + "." + "o" * 16, row=b"r" * 3))  # shorter than a base
    assert {d: s.offset for d, s in sel.selection.chosen.items()} == {"a": 10, "b": 20}
    assert sel.selection.base_only == {"a"}
    assert sel.selection.outcomes() == {"restored": 2, "rebuilt": 1, "stale": 0, "mismatch": 2}


def test_a_tombstone_forgets_the_device_and_keyless_records_are_skipped() -> None:
    sel = selector()
    sel.feed(b"a", snap(10))
    sel.feed(b"a", None)
    sel.feed(None, snap(10))
    assert sel.selection.chosen == {}
    assert sel.selection.outcomes() == {"restored": 0, "rebuilt": 0, "stale": 0, "mismatch": 0}


def _batch(device_ids: list[str], record_index: list[int]) -> ReadingBatch:
    n = len(device_ids)
    return ReadingBatch(device_ids=device_ids, ts_ms=np.arange(n, dtype=np.int64),
                        values=np.arange(n, dtype=np.float64).reshape(n, 1),
                        fetched_at=np.zeros(n), record_index=np.asarray(record_index, np.intp))


def test_replay_gives_each_device_only_the_readings_at_or_after_its_stamp() -> None:
    records: list[Any] = [FakeRecord(None, offset=offset) for offset in range(50, 56)]
    # Record 2 was rejected at decode: the batch skips it.
    batch = _batch(["a", "b", "a", "b", "c"], [0, 1, 3, 4, 5])  # offsets 50, 51, 53, 54, 55
    kept = replay_filter(batch, records, {"a": 53, "b": 51})  # c has no snapshot: all of its readings
    assert kept.device_ids == ["b", "a", "b", "c"]
    assert kept.record_index.tolist() == [1, 3, 4, 5]
    assert kept.values[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_replay_filter_keeps_the_batch_when_nothing_is_filtered() -> None:
    batch = _batch(["a"], [0])
    records: list[Any] = [FakeRecord(None, offset=7)]
    assert replay_filter(batch, records, {"a": 7}) is batch
    assert len(subset(batch, np.array([], dtype=np.intp))) == 0


def test_replay_start_never_goes_below_zero() -> None:
    assert replay_start([], committed=10, max_replay=100) == 0
    assert replay_start([5], committed=10, max_replay=0) == 10


class LogReader:
    """A group-less reader over an in-memory partition log of ``length`` records."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.next = 0
        self.fetched = False

    def assign(self, partitions: list[Any]) -> None:
        """Nothing to do: one partition."""

    async def seek_to_beginning(self, *partitions: Any) -> bool:
        self.next = 0
        return True

    def seek(self, partition: Any, offset: int) -> None:
        self.next = offset

    async def position(self, partition: Any) -> int:
        return self.next

    def highwater(self, partition: Any) -> int | None:
        return self.length if self.fetched else None

    async def getmany(self, *partitions: Any, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[Any, list[Any]]:
        self.fetched = True
        stop = min(self.length, self.next + (max_records or 1000))
        records = [SimpleNamespace(offset=o) for o in range(self.next, stop)]
        self.next = stop
        return {partitions[0]: records} if records else {}


async def collect(reader: LogReader, start: int, end: int) -> list[int]:
    offsets: list[int] = []
    async for records in fetch_range(reader, "tp", start, end, deadline=time.monotonic() + 5, max_records=4):
        offsets.extend(r.offset for r in records)
    return offsets


async def test_fetch_range_stops_at_the_requested_end() -> None:
    assert await collect(LogReader(20), 3, 11) == list(range(3, 11))


async def test_fetch_range_stops_at_the_log_end_when_the_end_lies_beyond_it() -> None:
    # A committed offset past the log end (a truncated log) must not stall the
    # restore: without the high-watermark stop, the deadline raises TimeoutError.
    assert await collect(LogReader(10), 5, 15) == list(range(5, 10))
