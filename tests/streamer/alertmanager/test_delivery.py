from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streamer.alertmanager.backoff import Backoff
from streamer.alertmanager.client import AlertmanagerUnavailable, PostResult
from streamer.alertmanager.delivery import Delivery, DeliveryAbandoned
from streamer.alertmanager.metrics import BridgeMetrics
from tests.streamer.alertmanager.fake_poster import FakePoster


def alerts(*ids: str) -> list[dict[str, Any]]:
    return [{"labels": {"alert_id": alert_id}, "annotations": {"event": "open"}} for alert_id in ids]


def delivery(poster: FakePoster, stop: asyncio.Event | None = None) -> tuple[Delivery, BridgeMetrics]:
    metrics = BridgeMetrics()
    return Delivery(poster, Backoff(0.001, 0.004), metrics, stop or asyncio.Event()), metrics


def sample(metrics: BridgeMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_an_outage_is_retried_with_backoff_until_accepted() -> None:
    poster = FakePoster([AlertmanagerUnavailable("unreachable", "refused"),
                         AlertmanagerUnavailable("server_error", "HTTP 503"),
                         AlertmanagerUnavailable("server_error", "HTTP 502")])
    sender, metrics = delivery(poster)
    done = await sender.deliver(alerts("a", "b"))
    assert done.accepted == (True, True)
    assert len(poster.posts) == 4
    assert sample(metrics, "streamer_alertmanager_retries_total") == 3
    assert sample(metrics, "streamer_alertmanager_post_failures_total", reason="unreachable") == 1
    assert sample(metrics, "streamer_alertmanager_post_failures_total", reason="server_error") == 2
    assert sender.backoff.attempts == 0  # reset by the success


async def test_a_refused_batch_is_split_and_only_the_bad_alert_is_skipped() -> None:
    poster = FakePoster(refuse=lambda alert: alert["labels"]["alert_id"] == "bad")
    sender, metrics = delivery(poster)
    done = await sender.deliver(alerts("a", "bad", "c"))
    assert done.accepted == (True, False, True)
    assert done.refused == 1
    assert [len(post) for post in poster.posts] == [3, 1, 1, 1]
    assert sample(metrics, "streamer_alertmanager_alerts_refused_total") == 1
    assert sample(metrics, "streamer_alertmanager_post_failures_total", reason="rejected") == 2


async def test_a_stop_during_an_outage_abandons_the_delivery() -> None:
    stop = asyncio.Event()
    poster = FakePoster([AlertmanagerUnavailable("unreachable", "refused")] * 1000)
    metrics = BridgeMetrics()
    sender = Delivery(poster, Backoff(0.01, 0.02), metrics, stop)
    task = asyncio.create_task(sender.deliver(alerts("a")))
    await asyncio.sleep(0.05)
    stop.set()
    with pytest.raises(DeliveryAbandoned):
        await asyncio.wait_for(task, 5)


async def test_nothing_to_deliver_posts_nothing() -> None:
    poster = FakePoster()
    sender, _ = delivery(poster)
    assert (await sender.deliver([])).accepted == ()
    assert poster.posts == []


async def test_a_refusal_of_one_alert_is_final() -> None:
    poster = FakePoster([PostResult(422, "unprocessable")])
    sender, _ = delivery(poster)
    assert (await sender.deliver(alerts("a"))).accepted == (False,)
    assert len(poster.posts) == 1
