"""The runtime's engines wired as the application wires them, around fakes (no broker)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from aiokafka import TopicPartition

from streamer.codec import ReadingDecoder
from streamer.config import Config
from streamer.endpoints import Health
from streamer.kafka.clients import PartitionPauses
from streamer.metrics import Metrics
from streamer.runtime.batches import Fetched
from streamer.runtime.commits import CommitProtocol
from streamer.runtime.fetcher import Fetcher
from streamer.runtime.ownership import PartitionOwnership
from streamer.runtime.score_loop import ScoreLoop
from streamer.runtime.scorer import Scorer
from streamer.scoring.batcher import Backpressure, MicroBatcher
from streamer.scoring.pipeline import ScoringPipeline
from streamer.state.manager import StateManager
from tests.fakes import FakeConsumer, HeldSink, reading_records

TP0, TP1 = TopicPartition("readings", 0), TopicPartition("readings", 1)


@dataclass
class Parts:
    """One daemon's engines over a fake consumer and a held sink."""

    config: Config
    consumer: FakeConsumer
    sink: HeldSink
    metrics: Metrics
    decoder: ReadingDecoder
    batcher: MicroBatcher[Fetched]
    scorer: Scorer
    commits: CommitProtocol
    fetcher: Fetcher
    score_loop: ScoreLoop
    ownership: PartitionOwnership

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def fetched(self, offset: int, count: int = 3) -> Fetched:
        """``count`` readings of one device on TP0 starting at ``offset``, as the fetcher queues them."""
        records = reading_records("pump-1", offset, count)
        return Fetched(records, self.decoder.decode(records), {TP0: offset + count},
                       np.zeros(count, dtype=np.int32))


def build(config: Config, consumer: FakeConsumer | None = None, state: StateManager | None = None,
          stopping: bool = False) -> Parts:
    consumer = consumer or FakeConsumer()
    metrics = Metrics()
    health = Health(stall_after_s=10.0, unreachable_after_s=10.0, commit_stall_after_s=10.0)
    pipeline = ScoringPipeline(config)
    readings = config.readings
    decoder = ReadingDecoder(readings.channels, device_id_pattern=readings.device_id_pattern,
                             max_message_bytes=readings.max_message_bytes,
                             max_future_ms=readings.max_future_ms)
    batching = config.batching
    batcher: MicroBatcher[Fetched] = MicroBatcher(max_batch=batching.max_batch,
                                                  max_wait_ms=batching.max_wait_ms,
                                                  queue_size=batching.queue_size)
    high, low = batching.pause_marks()
    scorer = Scorer(inline=not config.runtime.scores_on_thread(config.predictor))
    commits = CommitProtocol(metrics, health, max_unacked_batches=batching.max_unacked_batches)
    commits.committer = consumer
    pauses = PartitionPauses(consumer)
    sink = HeldSink()
    score_loop = ScoreLoop(pipeline=pipeline, batcher=batcher, scorer=scorer, commits=commits, sink=sink,
                           decoder=decoder, metrics=metrics,
                           on_batch_taken=lambda: fetcher.apply_backpressure())
    fetcher = Fetcher(consumer, config=config, decoder=decoder, batcher=batcher,
                      backpressure=Backpressure(high=high, low=low), pauses=pauses, commits=commits,
                      metrics=metrics, on_fetched=score_loop.busy)
    ownership = PartitionOwnership(consumer, config=config, pauses=pauses, commits=commits, scorer=scorer,
                                   state=state, registry=pipeline.registry, metrics=metrics, health=health,
                                   wait_idle=score_loop.wait_idle, stopping=lambda: stopping,
                                   report_pauses=fetcher.report_pauses)
    return Parts(config, consumer, sink, metrics, decoder, batcher, scorer, commits, fetcher, score_loop,
                 ownership)
