"""Replay recorded series through the daemon's own scoring path, without Kafka.

Every series becomes a device. Readings are encoded to the wire format, decoded
by the daemon's :class:`~streamer.codec.ReadingDecoder`, queued through its
:class:`~streamer.scoring.batcher.MicroBatcher` and scored by a
:class:`~streamer.scoring.pipeline.ScoringPipeline` (ring buffers, predictor,
threshold, alert episodes): an evaluation measures the code that runs in
production, not a re-implementation of it.

Series are interleaved by position, as a fleet would send them: the k-th
reading of every series arrives before the (k+1)-th of any, so all devices
are scored together in batched calls.

Given a :class:`FeedbackSource` (the simulated operator of
:mod:`streamer.lab.evaluation.operator`), the replay interleaves feedback
with the readings: each micro-batch ends at the end of the fleet row the
source allows (:meth:`FeedbackSource.limit`), is scored, its alerts go to
the source, and the messages it returns are applied with
``ScoringPipeline.apply_feedback`` before the next batch is fed. Without
one, batches are ``batching.max_batch`` readings, fed ahead of scoring as
before.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamer.codec import Alert, ReadingBatch, ReadingDecoder, encode_reading
from streamer.config import Config
from streamer.feedback.messages import Feedback, FeedbackRejection
from streamer.scoring.batcher import MicroBatcher
from streamer.scoring.pipeline import ScoringPipeline
from streamer.scoring.predictor import Predictor

Float64Array = npt.NDArray[np.float64]

_TOPIC = "replay"


class FeedbackSource(Protocol):
    """Operator feedback to interleave with a replay (see the module docstring)."""

    def limit(self) -> int:
        """The last fleet row (position in the series) the next micro-batch may hold."""

    def observe(self, alerts: Sequence[Alert], fed: npt.NDArray[np.int64]) -> list[Feedback]:
        """A scored batch's alerts in; the messages due now out (``fed``: last row fed, per series)."""


@dataclass(frozen=True)
class Series:
    """One device's readings in time order."""

    device_id: str
    ts_ms: npt.NDArray[np.int64]
    values: Float64Array  # (time, channels)

    def __len__(self) -> int:
        return len(self.ts_ms)


@dataclass
class ReplayResult:
    """Per-row outcome of a replay, aligned with the input series."""

    # Anomaly score per row; NaN where the row was not scored (warm-up or rejected).
    scores: list[Float64Array]
    alerts: list[Alert]
    rejected: Counter[str] = field(default_factory=Counter)
    readings: int = 0
    seconds: float = 0.0
    model_version: str = ""
    method: str = ""
    # Feedback applied ("applied:<kind>") or rejected ("rejected:<reason>"); empty without a source.
    feedback: Counter[str] = field(default_factory=Counter)


@dataclass
class _Record:
    """The fields of a Kafka record the decoder reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


def replay(config: Config, series: Sequence[Series], *, predictor: Predictor | None = None,
           feedback: FeedbackSource | None = None) -> ReplayResult:
    """Score every reading of ``series`` as the daemon would.

    Args:
        config: Daemon configuration (channels, buffers, predictor, thresholds,
            alerts, batching.max_batch).
        series: The devices; ids must be unique and match the device id pattern.
        predictor: A ready predictor (default: the one ``config`` names).
        feedback: Operator feedback to apply between batches (default: none).
    """
    ids = [item.device_id for item in series]
    if len(set(ids)) != len(ids):
        raise ValueError("series device ids must be unique")
    pipeline = ScoringPipeline(config, predictor=predictor)
    result = ReplayResult(scores=[np.full(len(item), np.nan) for item in series], alerts=[],
                          model_version=pipeline.predictor.version, method=pipeline.threshold.method)
    started = time.perf_counter()
    asyncio.run(_run(config, pipeline, series, result) if feedback is None
                else _run_with_feedback(config, pipeline, series, result, feedback))
    result.seconds = time.perf_counter() - started
    return result


def _decoder(config: Config) -> ReadingDecoder:
    readings = config.readings
    return ReadingDecoder(list(readings.channels), device_id_pattern=readings.device_id_pattern,
                          max_message_bytes=readings.max_message_bytes, max_future_ms=readings.max_future_ms)


def _batcher(config: Config) -> MicroBatcher[_Chunk]:
    # No waiting: offline, a micro-batch is whatever is queued, up to max_batch.
    return MicroBatcher(max_batch=config.batching.max_batch, max_wait_ms=0.0,
                        queue_size=config.batching.queue_size)


def _score(pipeline: ScoringPipeline, queued: Sequence[_Chunk], channels: int, result: ReplayResult
           ) -> list[Alert]:
    """Score one micro-batch into ``result``; returns its alerts."""
    batch = ReadingBatch.concat([item.readings for item in queued], channels)
    origin = np.concatenate([item.origin[item.readings.record_index] for item in queued])
    batch.record_index = np.arange(len(batch), dtype=np.intp)
    scored = pipeline.score(batch)
    for rejection in scored.rejections:
        result.rejected[rejection.reason] += 1
    result.alerts.extend(scored.alerts)
    for position, (series_index, row) in enumerate(origin.tolist()):
        result.scores[series_index][row] = scored.scores[position]
    result.readings += len(batch)
    return scored.alerts


async def _run(
    config: Config, pipeline: ScoringPipeline, series: Sequence[Series], result: ReplayResult
) -> None:
    channels = list(config.readings.channels)
    decoder = _decoder(config)
    batcher = _batcher(config)

    async def feed() -> None:
        for chunk in _chunks(series, channels, config.batching.max_batch):
            decoded = decoder.decode(chunk.records)
            for rejection in decoded.rejections:
                result.rejected[rejection.reason] += 1
            await batcher.put(_Chunk(decoded.readings, chunk.origin))
        await batcher.close()

    feeder = asyncio.create_task(feed())
    while True:
        queued = await batcher.next_batch()
        if not queued:
            break
        _score(pipeline, queued, len(channels), result)
    await feeder


async def _run_with_feedback(config: Config, pipeline: ScoringPipeline, series: Sequence[Series],
                             result: ReplayResult, source: FeedbackSource) -> None:
    """Feed one batch, score it, apply the feedback now due; repeat (nothing is fed ahead)."""
    channels = list(config.readings.channels)
    decoder = _decoder(config)
    batcher = _batcher(config)
    fed = np.full(len(series), -1, dtype=np.int64)
    # The generator runs on between batches, so it reads the limit after the last feedback.
    for chunk in _chunks(series, channels, config.batching.max_batch, limit=source.limit):
        decoded = decoder.decode(chunk.records)
        for rejection in decoded.rejections:
            result.rejected[rejection.reason] += 1
        await batcher.put(_Chunk(decoded.readings, chunk.origin))
        queued = await batcher.next_batch()  # exactly this chunk: nothing else is queued
        alerts = _score(pipeline, queued, len(channels), result)
        np.maximum.at(fed, chunk.origin[:, 0], chunk.origin[:, 1])
        for message in source.observe(alerts, fed):
            outcome = pipeline.apply_feedback(message)
            result.feedback[f"rejected:{outcome.reason}" if isinstance(outcome, FeedbackRejection)
                            else f"applied:{message.kind}"] += 1
    await batcher.close()


@dataclass(frozen=True)
class _Chunk:
    """Decoded readings and, per fetched record, its (series, row) origin."""

    readings: ReadingBatch
    origin: npt.NDArray[np.intp]  # (records, 2)

    def __len__(self) -> int:
        return len(self.readings)


@dataclass(frozen=True)
class _Encoded:
    records: list[_Record]
    origin: npt.NDArray[np.intp]


def _chunks(series: Sequence[Series], channels: Sequence[str], size: int,
            limit: Callable[[], int] | None = None) -> Iterator[_Encoded]:
    """Wire records interleaved by position, ``size`` at a time.

    With ``limit``, a chunk also ends with the fleet row ``limit()`` returns
    (asked at the end of every row).
    """
    longest = max((len(item) for item in series), default=0)
    records: list[_Record] = []
    origin: list[tuple[int, int]] = []
    offset = 0
    for row in range(longest):
        for index, item in enumerate(series):
            if row >= len(item):
                continue
            vector = item.values[row]
            value: float | dict[str, float] = (
                float(vector[0]) if len(channels) == 1
                else {name: float(v) for name, v in zip(channels, vector.tolist(), strict=True)})
            ts = int(item.ts_ms[row])
            records.append(_Record(_TOPIC, 0, offset, item.device_id.encode(),
                                   encode_reading(item.device_id, ts, value), ts))
            origin.append((index, row))
            offset += 1
            if len(records) == size:
                yield _Encoded(records, np.array(origin, dtype=np.intp))
                records, origin = [], []
        if limit is not None and records and row >= limit():
            yield _Encoded(records, np.array(origin, dtype=np.intp))
            records, origin = [], []
    if records:
        yield _Encoded(records, np.array(origin, dtype=np.intp))
