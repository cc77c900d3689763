"""Fetched records on their way through the scorer: one fetch, a micro-batch of fetches, a scored batch."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from aiokafka import TopicPartition

from streamer.codec import (
    DeadLetter,
    DecodedBatch,
    ReadingBatch,
    ReadingDecoder,
    Record,
    Rejection,
    dead_letter,
)
from streamer.scoring.pipeline import ScoreResult

Letters = list[tuple[bytes | None, DeadLetter]]


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
class ScoredBatch:
    """A scored micro-batch whose alerts and dead letters await the broker's acknowledgement."""

    items: Sequence[Fetched]
    acks: Awaitable[Any]
    result: ScoreResult
    letters: Sequence[tuple[bytes | None, DeadLetter]]
    batch_seconds: float
    readings: int


@dataclass
class MicroBatch:
    """Several fetches as one: every record, every decoded reading, the decode rejections as letters."""

    records: list[Record]
    readings: ReadingBatch
    letters: Letters
    partitions: npt.NDArray[np.int32]  # input partition of each record


def dead_letters(records: Sequence[Record], rejections: Iterable[Rejection], now_ms: int) -> Letters:
    """The dead letter of each rejection, keyed by its record's Kafka key: the one place they are built."""
    return [(records[r.record_index].key, dead_letter(records[r.record_index], r, now_ms))
            for r in rejections]


def combine(items: Sequence[Fetched], channels: int) -> MicroBatch:
    """One record list and one reading batch from several fetches; decode rejections as letters."""
    records: list[Record] = []
    batches: list[ReadingBatch] = []
    letters: Letters = []
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
        letters.extend(dead_letters(item.records, item.decoded.rejections, now_ms))
    partitions = (items[0].partitions if len(items) == 1
                  else np.concatenate([item.partitions for item in items]))
    return MicroBatch(records, ReadingBatch.concat(batches, channels), letters, partitions)


def owned_only(items: Sequence[Fetched], active: Collection[TopicPartition],
               decoder: ReadingDecoder) -> list[Fetched]:
    """The fetched records of ``active`` partitions only.

    Records of a partition that was revoked (or is being restored) since they
    were fetched are dropped unscored and uncommitted: their owner
    reprocesses them against the right state. A fetch that mixes both is
    decoded again from its kept records.
    """
    kept: list[Fetched] = []
    for item in items:
        if all(tp in active for tp in item.ends):
            kept.append(item)
            continue
        records = [r for r in item.records if TopicPartition(r.topic, r.partition) in active]
        if not records:
            continue
        fetched_at = item.decoded.readings.fetched_at
        decoded = decoder.decode(records, float(fetched_at[0]) if len(fetched_at) else None)
        ends = {tp: end for tp, end in item.ends.items() if tp in active}
        partitions = np.array([r.partition for r in records], dtype=np.int32)
        kept.append(Fetched(records, decoded, ends, partitions))
    return kept
