"""Scoring pauses: a state job that holds the scorer shows in the histogram and the longest-pause gauge."""

from __future__ import annotations

import time

from streamer.metrics import Metrics
from streamer.runtime.pauses import PauseMeter
from streamer.runtime.scorer import Scorer


def longest(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("streamer_scoring_pause_longest_seconds")


def pauses(metrics: Metrics, cause: str) -> float | None:
    return metrics.registry.get_sample_value("streamer_scoring_pause_seconds_count", {"cause": cause})


async def test_a_state_job_on_the_scorer_is_reported_as_a_pause_of_its_job() -> None:
    metrics = Metrics()
    scorer = Scorer(inline=True, pauses=PauseMeter(metrics))
    def injected_pause() -> int:
        time.sleep(0.05)
        return 7

    try:
        assert await scorer.run_job(injected_pause, "snapshot") == 7
    finally:
        scorer.shutdown()
    assert pauses(metrics, "snapshot") == 1
    assert pauses(metrics, "restore") == 0
    over_20ms = metrics.registry.get_sample_value("streamer_scoring_pause_seconds_bucket",
                                                  {"cause": "snapshot", "le": "0.02"})
    assert over_20ms == 0  # the injected 50 ms pause is above the 20 ms bucket
    assert (longest(metrics) or 0.0) >= 0.05


def test_the_longest_pause_stays_visible_for_one_whole_interval_then_gives_way() -> None:
    metrics = Metrics()
    ticks = iter([0.0, 0.5, 10.0, 10.25])
    meter = PauseMeter(metrics, clock=lambda: next(ticks))
    with meter.hold("release"):
        pass  # 0.5 s by the clock
    assert longest(metrics) == 0.5
    assert meter.next_interval() == 0.5  # the interval it ended in is over: still shown
    with meter.hold("gauges"):
        pass  # 0.25 s
    assert longest(metrics) == 0.5
    assert meter.next_interval() == 0.25  # two intervals on, only the later pause is shown
    assert meter.next_interval() == 0.0
    assert longest(metrics) == 0.0
