"""The bridge loop with a fake consumer and a scripted Alertmanager: what is posted, what is committed."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from aiokafka import TopicPartition
from aiokafka.errors import NoOffsetForPartitionError

from streamer.alertmanager.backoff import Backoff
from streamer.alertmanager.bridge import Bridge
from streamer.alertmanager.client import AlertmanagerUnavailable
from streamer.alertmanager.delivery import Delivery
from streamer.alertmanager.metrics import BridgeMetrics
from streamer.alertmanager.payload import rfc3339
from streamer.config import AlertmanagerConfig
from tests.fakes import START_MS, FakeConsumer, FakeRecord
from tests.streamer.alertmanager.builders import record
from tests.streamer.alertmanager.fake_poster import FakePoster

P0 = TopicPartition("alerts", 0)
P1 = TopicPartition("alerts", 1)
NOW = START_MS + 3_600_000


def bridge(poster: FakePoster, consumer: FakeConsumer, **settings: Any) -> Bridge:
    config = msgspec.structs.replace(AlertmanagerConfig(url="http://am:9093"), **settings)
    return Bridge(consumer, Delivery(poster, Backoff(0.001, 0.002), BridgeMetrics(), asyncio.Event()),
                  config, BridgeMetrics(), wall_ms=lambda: NOW)


def sample(b: Bridge, name: str, **labels: str) -> float:
    value = b.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def batch(*records: FakeRecord) -> dict[TopicPartition, list[FakeRecord]]:
    out: dict[TopicPartition, list[FakeRecord]] = {}
    for item in records:
        out.setdefault(TopicPartition("alerts", item.partition), []).append(item)
    return out


async def test_a_firing_episode_holds_its_partition_s_commit_at_its_open() -> None:
    consumer = FakeConsumer([P0, P1])
    poster = FakePoster()
    b = bridge(poster, consumer)
    await b.handle(batch(record(4, "a", "resolve", device="x"), record(5, "ep-1", "open"),
                         record(9, "ep-2", "open", partition=1, ts=START_MS + 1),
                         record(10, "ep-2", "resolve", partition=1, ts=START_MS + 2)))
    assert consumer.commits == [{P0: 5, P1: 11}]  # ep-1 fires from offset 5; ep-2 is over
    assert poster.states() == {"a": "resolved", "ep-1": "firing", "ep-2": "resolved"}
    assert [a["labels"]["alert_id"] for a in poster.posts[0]] == ["a", "ep-1", "ep-2"]  # one per episode
    assert sample(b, "streamer_alertmanager_firing_episodes") == 1
    assert sample(b, "streamer_alertmanager_alerts_posted_total", event="resolve") == 2

    await b.handle(batch(record(6, "ep-1", "update"), record(7, "ep-3", "open", device="pump-2")))
    assert len(consumer.commits) == 1  # P0 stays at 5: nothing new to commit
    await b.handle(batch(record(8, "ep-1", "resolve", ts=START_MS + 9)))
    assert consumer.commits[-1] == {P0: 7}  # ep-3 (offset 7) still fires
    assert poster.states()["ep-1"] == "resolved"
    assert [e.alert_id for e in b.firing] == ["ep-3"]


async def test_a_new_bridge_rebuilds_the_firing_set_from_the_held_back_offset() -> None:
    first = FakeConsumer([P0])
    first_poster = FakePoster()
    old = bridge(first_poster, first)
    log = [record(0, "ep-1", "open"), record(1, "ep-2", "open", device="pump-2"),
           record(2, "ep-2", "resolve", device="pump-2"), record(3, "ep-3", "open", device="pump-3")]
    await old.handle(batch(*log))
    assert first.commits == [{P0: 0}]
    # A crash; the next bridge of the group reads from the committed offset.
    second = FakeConsumer([P0])
    poster = FakePoster()
    new = bridge(poster, second)
    committed = first.group_offsets[P0]
    await new.handle(batch(*log[committed:]))
    assert {e.alert_id for e in new.firing} == {"ep-1", "ep-3"}
    assert poster.states() == {"ep-1": "firing", "ep-2": "resolved", "ep-3": "firing"}
    assert [a["annotations"]["event"] for a in poster.posts[0]] == ["open", "resolve", "open"]


async def test_nothing_is_committed_until_alertmanager_accepts() -> None:
    consumer = FakeConsumer([P0])
    outage = [AlertmanagerUnavailable("unreachable", "refused")] * 3
    poster = FakePoster(outage)
    b = bridge(poster, consumer)
    original = poster.post

    async def post(alerts: Sequence[Mapping[str, Any]]) -> Any:
        assert consumer.commits == []
        return await original(alerts)

    poster.post = post  # type: ignore[method-assign]
    await b.handle(batch(record(0, "ep-1", "open"), record(1, "ep-1", "resolve")))
    assert len(poster.posts) == 4
    assert consumer.commits == [{P0: 2}]
    assert b.delivery.metrics.registry.get_sample_value("streamer_alertmanager_retries_total") == 3


async def test_records_that_are_not_alerts_are_counted_and_committed_past() -> None:
    consumer = FakeConsumer([P0])
    poster = FakePoster()
    b = bridge(poster, consumer)
    await b.handle(batch(FakeRecord(b"{nope", topic="alerts", offset=0),
                         FakeRecord(None, topic="alerts", offset=1),
                         FakeRecord(b'{"event": "open"}', topic="alerts", offset=2)))
    assert consumer.commits == [{P0: 3}]
    assert poster.posts == []
    for reason in ("malformed_json", "empty", "invalid_alert"):
        assert sample(b, "streamer_alertmanager_records_rejected_total", reason=reason) == 1


async def test_an_alert_refused_for_good_is_skipped_and_no_longer_holds_the_commit() -> None:
    consumer = FakeConsumer([P0])
    poster = FakePoster(refuse=lambda alert: alert["labels"]["device"] == "bad")
    b = bridge(poster, consumer)
    await b.handle(batch(record(0, "ep-bad", "open", device="bad"), record(1, "ep-1", "open")))
    assert consumer.commits == [{P0: 1}]
    assert [e.alert_id for e in b.firing] == ["ep-1"]
    assert sample(b, "streamer_alertmanager_alerts_posted_total", event="open") == 1


async def test_firing_episodes_are_resent_with_their_end_ahead() -> None:
    consumer = FakeConsumer([P0])
    poster = FakePoster()
    b = bridge(poster, consumer, resend_interval_s=0.05, ends_after_intervals=4)
    consumer.fetches.append(batch(record(0, "ep-1", "open"), record(1, "ep-2", "open", device="pump-2"),
                                  record(2, "ep-2", "resolve", device="pump-2")))
    stop = asyncio.Event()
    task = asyncio.create_task(b.run(stop))
    deadline = asyncio.get_running_loop().time() + 10
    while sample(b, "streamer_alertmanager_alerts_posted_total", event="resend") < 3:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    resends = poster.posts[1:]
    assert all([a["labels"]["alert_id"] for a in post] == ["ep-1"] for post in resends)
    assert resends[0][0]["endsAt"] == rfc3339(NOW + 200)  # 4 x 0.05 s ahead


async def test_a_revoked_partition_s_episodes_are_released() -> None:
    consumer = FakeConsumer([P0, P1])
    b = bridge(FakePoster(), consumer)
    await b.handle(batch(record(0, "ep-1", "open"), record(0, "ep-2", "open", partition=1, device="p2")))
    consumer.assigned = {P1}
    b.release([P0])
    assert [e.alert_id for e in b.firing] == ["ep-2"]
    await b.handle(batch(record(1, "ep-1", "resolve")))  # fetched before the revoke
    assert consumer.commits[-1:] != [{P0: 2}]  # not ours to commit any more


async def test_a_new_group_starts_where_kafka_auto_offset_reset_says() -> None:
    consumer = FakeConsumer([P0])
    consumer.fetches.append(NoOffsetForPartitionError(P0))
    b = bridge(FakePoster(), consumer)
    stop = asyncio.Event()
    task = asyncio.create_task(b.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert consumer.seeks == [("beginning", (P0,))]
