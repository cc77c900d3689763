"""The benchmarks' scrape of a daemon's metrics endpoint (a real HealthServer on loopback)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from streamer.endpoints import Health, HealthServer
from streamer.lab.bench.daemon import EVENT_TO_DECISION, HISTOGRAMS, scrape_endpoint
from streamer.metrics import Metrics


@pytest.fixture(scope="module")
def served_metrics() -> Iterator[tuple[Metrics, HealthServer]]:
    metrics = Metrics()
    metrics.consumed.inc(120)
    metrics.scored.inc(100)
    metrics.warmup.inc(7)
    metrics.rejected.labels("malformed_json").inc(3)
    metrics.rejected.labels("non_finite").inc(2)
    metrics.alerts.labels("open", "zscore").inc(4)
    metrics.alerts.labels("resolve", "zscore").inc(1)
    metrics.rebalances.inc(2)
    metrics.assigned.set(6)
    metrics.event_to_decision.observe_many(np.array([0.004, 0.02, 0.5]))
    server = HealthServer(metrics.registry, Health(), "127.0.0.1", 0)
    server.start()
    yield metrics, server
    server.stop()


def test_progress_scrape_reads_the_same_progress_as_the_full_exposition(
        served_metrics: tuple[Metrics, HealthServer]) -> None:
    _, server = served_metrics
    full = scrape_endpoint(server.port, cpu_s=1.5)
    progress = scrape_endpoint(server.port, cpu_s=1.5, histograms=False)
    assert (full.handled, full.consumed, full.scored, full.alerts, full.rebalances, full.assigned) == (
        112.0, 120.0, 100.0, 5.0, 2.0, 6.0)
    assert (progress.handled, progress.consumed, progress.scored, progress.alerts, progress.rebalances,
            progress.assigned) == (full.handled, full.consumed, full.scored, full.alerts, full.rebalances,
                                   full.assigned)
    assert progress.cpu_s == full.cpu_s == 1.5


def test_only_the_full_scrape_carries_the_latency_histograms(
        served_metrics: tuple[Metrics, HealthServer]) -> None:
    _, server = served_metrics
    full = scrape_endpoint(server.port, cpu_s=None)
    progress = scrape_endpoint(server.port, cpu_s=None, histograms=False)
    assert set(full.histograms) == set(HISTOGRAMS)
    assert full.histograms[EVENT_TO_DECISION].count == 3.0
    assert progress.histograms == {}
