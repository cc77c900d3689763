"""The fetch side: ``getmany``, decoding, backpressure, and offset resets.

Backpressure: the fetch loop feeds a bounded queue (``batching.queue_size``
fetches). Once ``batching.pause_high`` readings are queued every assigned
partition is paused (aiokafka drops what it prefetched for them) and the
fetch loop keeps polling without fetching; at ``batching.pause_low`` they
resume. Queued readings therefore never exceed ``pause_high`` plus one
fetch. A partition also paused because its state is being restored stays
paused until the restore is done (:class:`~streamer.kafka.clients.PartitionPauses`
keeps the reasons apart).

Offset resets: a partition whose committed offset is out of range (below
the log start after retention, or beyond the log end) is reset to
``kafka.auto_offset_reset``, logged as a warning with both offsets, and
counted in ``streamer_offset_resets_total{reason="out_of_range"}``. Kafka
reports such a fetch as an error; brokers that instead answer it with no
records (Tansu) are caught by comparing the position with the high
watermark (:meth:`Fetcher.check_beyond_end`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

import numpy as np
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError

from streamer.codec import ReadingDecoder, Record
from streamer.config import Config
from streamer.kafka.clients import PartitionPauses, reset_positions
from streamer.metrics import Metrics
from streamer.runtime.batches import Fetched
from streamer.runtime.commits import CommitProtocol
from streamer.runtime.seams import SYSTEM_CLOCK, Clock, Consumer
from streamer.scoring.batcher import Backpressure, MicroBatcher
from streamer.vocabulary import PAUSE_REASONS, OffsetResetReason, PauseReason

log = logging.getLogger(__name__)

# A position beyond the high watermark must persist this long before it is
# taken as out of range: right after a leader change the new leader's high
# watermark may briefly lag the old one's.
BEYOND_END_CONFIRM_S = 5.0
RESTORE: PauseReason = "restore"
BACKPRESSURE: PauseReason = "backpressure"
OUT_OF_RANGE: OffsetResetReason = "out_of_range"
NO_COMMITTED_OFFSET: OffsetResetReason = "no_committed_offset"


class Fetcher:
    """Fetches and decodes records into the batcher, pausing partitions while it is full."""

    def __init__(self, consumer: Consumer, *, config: Config, decoder: ReadingDecoder,
                 batcher: MicroBatcher[Fetched], backpressure: Backpressure, pauses: PartitionPauses,
                 commits: CommitProtocol, metrics: Metrics, on_fetched: Callable[[], None],
                 clock: Clock = SYSTEM_CLOCK) -> None:
        """``on_fetched`` is called when records arrive (the scoring side is busy from then on)."""
        self.consumer = consumer
        self.config = config
        self.decoder = decoder
        self.batcher = batcher
        self.backpressure = backpressure
        self.pauses = pauses
        self.commits = commits
        self.metrics = metrics
        self.on_fetched = on_fetched
        self.clock = clock

    async def run(self) -> None:
        """Fetch until cancelled."""
        consumer = self.consumer
        max_records = self.config.batching.max_batch
        while True:
            try:
                fetched = await consumer.getmany(timeout_ms=100, max_records=max_records)
            except OffsetOutOfRangeError as exc:
                await self.reset_offsets(_offsets_of(exc), OUT_OF_RANGE)
                continue
            except NoOffsetForPartitionError as exc:
                await self.reset_offsets(_offsets_of(exc), NO_COMMITTED_OFFSET)
                continue
            records: list[Record] = [r for batch in fetched.values() for r in batch]
            if not records:
                continue
            self.on_fetched()
            self.metrics.consumed.inc(len(records))
            decoded = self.decoder.decode(records, self.clock.time())
            ends = {tp: batch[-1].offset + 1 for tp, batch in fetched.items() if batch}
            # One partition number per record, from the per-partition lists (no per-record work).
            partitions = np.repeat(np.array([tp.partition for tp in fetched], dtype=np.int32),
                                   [len(batch) for batch in fetched.values()])
            self.commits.fetched(ends)
            await self.batcher.put(Fetched(records, decoded, ends, partitions))
            self.metrics.queue_depth.set(self.batcher.qsize())
            self.apply_backpressure()

    def apply_backpressure(self) -> None:
        """Pause every partition above the high mark, resume at the low mark."""
        queued = self.batcher.readings()
        self.metrics.queue_readings.set(queued)
        change = self.backpressure.update(queued, full=self.batcher.full())
        if change is None:
            return
        if change:
            self.pauses.pause_all(BACKPRESSURE)
            self.metrics.backpressure_pauses.inc()
            log.debug("backpressure: %d readings queued; partitions paused", queued)
        else:
            self.pauses.resume_all(BACKPRESSURE)
            log.debug("backpressure: %d readings queued; partitions resumed", queued)
        self.report_pauses()

    def report_pauses(self) -> None:
        """Set the paused-partitions gauge of every reason."""
        for reason in PAUSE_REASONS:
            self.metrics.partitions_paused.labels(reason).set(self.pauses.count(reason))

    async def reset_offsets(self, partitions: Mapping[TopicPartition, int | None],
                            reason: OffsetResetReason) -> None:
        """Move ``partitions`` to ``kafka.auto_offset_reset``, then count and log each move."""
        policy = self.config.kafka.auto_offset_reset
        try:
            moved = await reset_positions(self.consumer, list(partitions), policy)
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

    async def check_beyond_end(self) -> None:
        """Reset active partitions whose position stays beyond the high watermark.

        Kafka answers a fetch beyond the log end with OFFSET_OUT_OF_RANGE;
        some Kafka-protocol brokers (Tansu) answer it with no records, which
        would leave the partition stalled for good.
        """
        consumer = self.consumer
        now = self.clock.monotonic()
        paused = consumer.paused()
        for tp in list(self.commits.active):
            highwater = consumer.highwater(tp) if tp in consumer.assignment() else None
            position = await self._position(tp) if highwater is not None and tp not in paused else None
            progress = self.commits.progress(tp)
            if progress is None:  # revoked meanwhile
                continue
            if highwater is None or position is None or position <= highwater:
                progress.beyond_end_since = None
                continue
            if progress.beyond_end_since is None:
                progress.beyond_end_since = now
            if now - progress.beyond_end_since >= BEYOND_END_CONFIRM_S:
                progress.beyond_end_since = None
                log.warning("partition %d: position %d is beyond the high watermark %d",
                            tp.partition, position, highwater)
                await self.reset_offsets({tp: position}, OUT_OF_RANGE)

    async def _position(self, tp: TopicPartition) -> int | None:
        """The consumer's position of ``tp``, if it has a valid one now."""
        try:
            return await asyncio.wait_for(self.consumer.position(tp), 0.2)
        except (KafkaError, TimeoutError):
            return None


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
