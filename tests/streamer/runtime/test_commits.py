"""The commit protocol: only finished offsets that moved are committed; a refused commit is retried."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import KafkaTimeoutError

from streamer.endpoints import Health
from streamer.metrics import Metrics
from streamer.runtime.commits import CommitProtocol
from tests.fakes import FakeConsumer
from tests.streamer.runtime.parts import TP0, TP1


class RefusingConsumer(FakeConsumer):
    def __init__(self) -> None:
        super().__init__([TP0, TP1])
        self.refuse = True

    async def commit(self, offsets: object) -> None:
        if self.refuse:
            raise KafkaTimeoutError()
        await super().commit(offsets)  # type: ignore[arg-type]


def protocol(consumer: FakeConsumer, metrics: Metrics) -> CommitProtocol:
    health = Health(stall_after_s=10, unreachable_after_s=10, commit_stall_after_s=10)
    commits = CommitProtocol(metrics, health, max_unacked_batches=2)
    commits.committer = consumer
    return commits


async def test_a_refused_commit_is_counted_logged_as_an_event_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer, metrics = RefusingConsumer(), Metrics()
    commits = protocol(consumer, metrics)
    commits.activate(TP0, 5)
    commits.activate(TP1, None)
    commits.fetched({TP0: 8, TP1: 2})
    assert commits.waiting()
    await commits.commit()  # nothing finished beyond what is committed
    assert consumer.commits == []
    with caplog.at_level(logging.WARNING, logger="streamer.runtime.commits"):
        progress = commits.progress(TP0)
        assert progress is not None
        progress.finished = 8
        await commits.commit()
    assert [getattr(r, "event", None) for r in caplog.records] == ["commit_failed"]
    assert metrics.registry.get_sample_value("streamer_commits_total", {"outcome": "failed"}) == 1
    assert commits.committed_offsets() == {TP0: 5}
    consumer.refuse = False
    await commits.commit()
    assert consumer.commits == [{TP0: 8}]
    assert commits.committed_offsets() == {TP0: 8}
    assert metrics.registry.get_sample_value("streamer_commits_total", {"outcome": "ok"}) == 1
    assert commits.waiting()  # TP1 fetched up to 2, nothing of it finished
