"""The scoring side: micro-batches from the batcher, scored, handed to the alert sink, then finished.

Batches are scored one at a time, in fetch order, on the :class:`Scorer`
(the event loop or its scoring thread). A scored batch's alerts and dead
letters go to the :class:`~streamer.runtime.seams.AlertSink`; the next batch
is scored while earlier acknowledgements are still on their way (at most
``batching.max_unacked_batches`` in flight), and the
:class:`~streamer.runtime.commits.CommitProtocol` finishes each in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from streamer.codec import ReadingBatch, ReadingDecoder
from streamer.errors import PipelineError
from streamer.metrics import Metrics
from streamer.runtime.batches import Fetched, ScoredBatch, combine, dead_letters, owned_only
from streamer.runtime.commits import CommitProtocol
from streamer.runtime.scorer import Scorer
from streamer.runtime.seams import AlertSink
from streamer.scoring.batcher import MicroBatcher
from streamer.scoring.pipeline import ScoreResult, ScoringPipeline


class ScoreLoop:
    """Scores what the fetcher queued and hands the output to the sink, one batch at a time."""

    def __init__(self, *, pipeline: ScoringPipeline, batcher: MicroBatcher[Fetched], scorer: Scorer,
                 commits: CommitProtocol, sink: AlertSink, decoder: ReadingDecoder, metrics: Metrics,
                 on_batch_taken: Callable[[], None]) -> None:
        """``on_batch_taken`` runs whenever a batch leaves the batcher (backpressure may lift)."""
        self.pipeline = pipeline
        self.batcher = batcher
        self.scorer = scorer
        self.commits = commits
        self.sink = sink
        self.decoder = decoder
        self.metrics = metrics
        self.on_batch_taken = on_batch_taken
        self._idle = asyncio.Event()
        self._idle.set()
        self._taken = 0  # batches taken from the batcher and not yet finished

    # ------------------------------------------------------------------ idleness
    def busy(self) -> None:
        """Records were fetched: the loop is not idle until they are finished."""
        self._idle.clear()

    def idle(self) -> bool:
        """Whether nothing is queued, being scored or awaiting acknowledgement."""
        return self._idle.is_set()

    async def wait_idle(self) -> None:
        """Wait until :meth:`idle`."""
        await self._idle.wait()

    # ------------------------------------------------------------------- loops
    async def run(self) -> None:
        """Score batches until the batcher is closed and drained."""
        commits = self.commits
        while True:
            items = await self.batcher.next_batch()
            self.on_batch_taken()
            if not items:
                commits.no_more_batches()  # the acknowledgements end after the rest
                return
            self._idle.clear()
            self._taken += 1
            # Room for one more unacknowledged batch; released once this batch is finished.
            await commits.reserve()
            async with commits.scoring():
                owned = owned_only(items, commits.active, self.decoder)
                scored = await self._score_items(owned) if owned else None
                if scored is not None:
                    # Under the lock: a snapshot taken next waits for this batch's acknowledgements.
                    commits.scored(scored)
            if scored is None:
                self._batch_finished()

    async def acknowledge(self) -> None:
        """Finish scored batches as their acknowledgements arrive (ends after :meth:`run`)."""
        await self.commits.acknowledge(self._finished)

    async def _score_items(self, items: Sequence[Fetched]) -> ScoredBatch:
        """Score ``items`` and hand their alerts and dead letters to the sink, in order."""
        batch = combine(items, len(self.pipeline.channels))
        started = time.perf_counter()
        try:
            result = await self.scorer.score(lambda: self._score(batch.readings, batch.partitions))
        except Exception as exc:
            # Nothing of this batch is committed; the next owner replays it.
            raise PipelineError(f"scoring failed: {exc}") from exc
        batch_seconds = time.perf_counter() - started
        now_ms = int(time.time() * 1000)
        letters = batch.letters
        letters.extend(dead_letters(batch.records, result.rejections, now_ms))
        acks = await self.sink.send(result.alerts, letters, result.shadow_alerts)
        return ScoredBatch(items, acks, result, letters, batch_seconds, len(batch.readings))

    def _score(self, readings: ReadingBatch, partitions: npt.NDArray[np.int32]) -> ScoreResult:
        """Score on the scorer; new devices remember the partition their reading came from."""
        return self.pipeline.score(readings, partitions[readings.record_index])

    def _finished(self, batch: ScoredBatch) -> None:
        self._record(batch)
        self._batch_finished()

    def _batch_finished(self) -> None:
        """A batch taken from the batcher is finished: free its room; idle when nothing is left."""
        self._taken -= 1
        self.commits.release()
        if self._taken == 0 and self.batcher.qsize() == 0:
            self._idle.set()

    def _record(self, batch: ScoredBatch) -> None:
        m = self.metrics
        result = batch.result
        m.scored.inc(result.scored)
        m.warmup.inc(result.warmup)
        for _, letter in batch.letters:
            m.rejected.labels(letter.reason).inc()
        acked = time.time()
        for reason, count in result.suppressed.items():
            m.suppressed.labels(reason).inc(count)
        if result.shadow is not None:
            m.shadow_scored.inc(result.shadow.scored)
            for agreement, count in result.shadow.flags.items():
                m.shadow_flags.labels(agreement).inc(count)
            for alert in result.shadow_alerts:
                m.shadow_alerts.labels(alert.event).inc()
        for alert in result.alerts:
            m.alerts.labels(alert.event, alert.method).inc()
            if alert.event == "open":
                m.event_to_alert.observe(max(0.0, acked - alert.ts / 1000.0))
        decided = result.decided_at
        m.event_to_decision.observe_many(np.maximum(0.0, decided - result.event_ts_ms / 1000.0))
        m.consume_to_decision.observe_many(decided - result.fetched_at)
        m.batch_size.observe(batch.readings)
        m.batch_seconds.observe(batch.batch_seconds)
        m.model_seconds.observe(result.model_seconds)
        m.queue_depth.set(self.batcher.qsize())
