"""The runtime's engines as the application wires them (``Application.build_engines``), around fakes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from aiokafka import TopicPartition

from streamer.codec import ReadingDecoder
from streamer.config import Config
from streamer.metrics import Metrics
from streamer.runtime.application import Application
from streamer.runtime.batches import Fetched
from streamer.runtime.commits import CommitProtocol
from streamer.runtime.fetcher import Fetcher
from streamer.runtime.ownership import PartitionOwnership
from streamer.runtime.score_loop import ScoreLoop
from streamer.runtime.scorer import Scorer
from streamer.scoring.batcher import MicroBatcher
from tests.fakes import FakeConsumer, HeldSink, reading_records

TP0, TP1 = TopicPartition("readings", 0), TopicPartition("readings", 1)


@dataclass
class Parts:
    """One application's engines over a fake consumer and a held sink (no broker, not started)."""

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


def build(config: Config, consumer: FakeConsumer | None = None) -> Parts:
    consumer = consumer or FakeConsumer()
    sink = HeldSink()
    application = Application(config, metrics=Metrics())
    engines = application.build_engines(consumer, sink)
    return Parts(config, consumer, sink, application.metrics, application.decoder, application.batcher,
                 application.scorer, application.commits, engines.fetcher, engines.score_loop,
                 engines.ownership)
