import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from streamer.codec import REASONS
from streamer.metrics import BulkHistogram, Metrics

NAME = "demo_seconds"


def histogram(bounds: tuple[float, ...] = (0.1, 1.0, 10.0)) -> tuple[BulkHistogram, CollectorRegistry]:
    registry = CollectorRegistry()
    return BulkHistogram(NAME, "Demo.", bounds, registry), registry


def bucket(registry: CollectorRegistry, le: str) -> float | None:
    return registry.get_sample_value(f"{NAME}_bucket", {"le": le})


def test_bulk_histogram_buckets_are_cumulative_and_bounds_inclusive() -> None:
    hist, registry = histogram()
    hist.observe_many(np.array([0.05, 0.1, 0.5, 1.0, 1.0000001, 10.0, 50.0]))
    assert bucket(registry, "0.1") == 2.0  # 0.05 and the boundary value 0.1
    assert bucket(registry, "1.0") == 4.0  # + 0.5 and the boundary value 1.0
    assert bucket(registry, "10.0") == 6.0
    assert bucket(registry, "+Inf") == 7.0
    assert registry.get_sample_value(f"{NAME}_count") == 7.0
    assert registry.get_sample_value(f"{NAME}_sum") == pytest.approx(62.6500001)


def test_bulk_histogram_accumulates_and_ignores_empty() -> None:
    hist, registry = histogram()
    hist.observe_many(np.array([0.5]))
    hist.observe_many(np.array([], dtype=np.float64))
    hist.observe_many(np.array([0.5, 20.0]))
    assert bucket(registry, "1.0") == 2.0
    assert bucket(registry, "+Inf") == 3.0
    assert registry.get_sample_value(f"{NAME}_sum") == pytest.approx(21.0)


def test_bulk_histogram_unsorted_buckets_are_sorted() -> None:
    hist, registry = histogram((10.0, 0.1, 1.0))
    hist.observe_many(np.array([0.5]))
    assert bucket(registry, "0.1") == 0.0
    assert bucket(registry, "1.0") == 1.0


def test_quantile() -> None:
    hist, _ = histogram((1.0, 2.0))
    assert hist.quantile(0.5) is None  # nothing observed
    hist.observe_many(np.array([0.5, 1.5, 1.5, 1.5]))
    assert hist.quantile(0.5) == pytest.approx(1 + 1 / 3)
    assert hist.quantile(0.25) == pytest.approx(1.0)
    assert hist.quantile(1.0) == pytest.approx(2.0)
    hist.observe_many(np.array([100.0] * 20))
    assert hist.quantile(0.99) == 2.0  # in +Inf: the highest finite bound


def test_metrics_register_on_a_fresh_registry_with_all_reasons() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    assert metrics.registry is registry
    for reason in REASONS:
        assert registry.get_sample_value("streamer_readings_rejected_total", {"reason": reason}) == 0.0
    metrics.rejected.labels("oversized").inc(3)
    assert registry.get_sample_value("streamer_readings_rejected_total", {"reason": "oversized"}) == 3.0
    text = generate_latest(registry).decode()
    assert "streamer_event_to_decision_seconds_bucket" in text
    assert "streamer_consumer_lag" in text


def test_two_metrics_instances_do_not_clash() -> None:
    first, second = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    first.scored.inc(2)
    assert second.registry.get_sample_value("streamer_readings_scored_total") == 0.0
    assert first.registry.get_sample_value("streamer_readings_scored_total") == 2.0


def test_set_build_publishes_info() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.set_build(predictor="baseline-holt", model_version="baseline-abc", method="zscore")
    labels = {"version": "0.1.0", "predictor": "baseline-holt", "model_version": "baseline-abc",
              "method": "zscore"}
    assert metrics.registry.get_sample_value("streamer_info", labels) == 1.0


def test_forget_partitions_removes_lag_series() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.lag.labels("0").set(5)
    metrics.lag.labels("3").set(7)
    metrics.forget_partitions([3, 9])  # 9 never had a series
    get = metrics.registry.get_sample_value
    assert get("streamer_consumer_lag", {"partition": "3"}) is None
    assert get("streamer_consumer_lag", {"partition": "0"}) == 5.0
