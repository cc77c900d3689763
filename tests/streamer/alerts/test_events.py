"""Alert events: what an episode change becomes, and how an alert explains itself (drivers)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import numpy as np
import numpy.typing as npt
import pytest

from streamer.alerts.events import MAX_DRIVERS, AlertSource, RoundChanges, build_alerts
from streamer.codec import Alert, ReadingBatch, decode_alert, encode_alert
from streamer.thresholds.result import ThresholdResult

TS = 1_700_000_000_000
NONE: npt.NDArray[np.intp] = np.zeros(0, dtype=np.intp)


def one_alert(values: list[float], forecast: list[float], channel_scores: list[float], *,
              channel: int | None = None, names: list[str] | None = None) -> Alert:
    """The ``open`` alert of one device whose reading has these figures per channel."""
    count = len(values)
    scores = np.array([channel_scores])
    picked = int(np.argmax(scores[0])) if channel is None else channel
    decision = ThresholdResult(score=scores[:, picked], anomalous=np.array([True]),
                               channel=np.array([picked], dtype=np.intp), smoothed=np.array([2.0]),
                               threshold=np.array([1.0]), channel_scores=scores)
    batch = ReadingBatch(device_ids=["press-3"], ts_ms=np.array([TS], np.int64), values=np.array([values]),
                         fetched_at=np.array([TS / 1000.0]), record_index=np.zeros(1, np.intp))
    change = RoundChanges(np.array([0]), decision, np.array([forecast]), opened=np.array([0]), updated=NONE,
                          resolved=NONE, episode_start=np.array([TS], np.int64))
    source = AlertSource(names or [f"ch{c}" for c in range(count)], "zscore", "baseline-x")
    [alert] = build_alerts([change], batch, source, decided_at=TS / 1000.0 + 0.01)
    return alert


def alert_schema() -> dict[str, Any]:
    text = resources.files("streamer").joinpath("schemas", "alert.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def test_the_channel_that_drives_the_score_comes_first_with_the_largest_share() -> None:
    alert = one_alert([20.0, 1.5, 3.0], [20.5, 1.0, 3.0], [0.2, 0.95, 0.05],
                      names=["temp", "vibration", "pressure"])
    assert alert.channel == "vibration"
    assert [d.channel for d in alert.drivers] == ["vibration", "temp", "pressure"]
    first = alert.drivers[0]
    assert (first.actual, first.forecast, first.residual, first.score) == (1.5, 1.0, 0.5, 0.95)
    assert first.share == pytest.approx(0.95 / 1.2)
    assert first.share > alert.drivers[1].share > alert.drivers[2].share
    assert sum(d.share for d in alert.drivers) == pytest.approx(1.0)
    temp = alert.drivers[1]
    assert (temp.actual, temp.forecast, temp.residual, temp.score) == (20.0, 20.5, -0.5, 0.2)
    # The first driver repeats the alert's own channel and figures.
    assert (first.actual, first.forecast, first.residual, first.score) == (
        alert.actual, alert.forecast, alert.residual, alert.score)


def test_channels_that_score_zero_are_left_out() -> None:
    alert = one_alert([1.0, 2.0, 3.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.8])
    assert [(d.channel, d.share) for d in alert.drivers] == [("ch2", 1.0)]


def test_when_no_channel_scores_the_alerts_channel_alone_has_share_one() -> None:
    alert = one_alert([1.0, 2.0], [1.5, 2.0], [0.0, 0.0], channel=1)
    assert [(d.channel, d.score, d.share) for d in alert.drivers] == [("ch1", 0.0, 1.0)]


def test_a_tie_puts_the_alerts_channel_first() -> None:
    alert = one_alert([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [0.5, 0.9, 0.9], channel=2)
    assert [d.channel for d in alert.drivers] == ["ch2", "ch1", "ch0"]


def test_a_one_channel_alert_has_one_driver() -> None:
    alert = one_alert([9.0], [1.0], [0.99], names=["value"])
    assert [(d.channel, d.actual, d.forecast, d.residual, d.score, d.share) for d in alert.drivers] == [
        ("value", 9.0, 1.0, 8.0, 0.99, 1.0)]


def test_at_most_max_drivers_are_listed_with_their_share_of_every_channel() -> None:
    count = MAX_DRIVERS + 3
    scores = [0.1 * (c + 1) for c in range(count)]
    alert = one_alert([1.0] * count, [0.0] * count, scores)
    assert len(alert.drivers) == MAX_DRIVERS
    highest = range(count - 1, count - 1 - MAX_DRIVERS, -1)
    assert [d.channel for d in alert.drivers] == [f"ch{c}" for c in highest]
    assert alert.drivers[0].share == pytest.approx(scores[-1] / sum(scores))
    assert sum(d.share for d in alert.drivers) < 1.0
    assert alert_schema()["properties"]["drivers"]["maxItems"] == MAX_DRIVERS


def test_non_finite_figures_become_null_and_the_alert_matches_the_schema() -> None:
    alert = one_alert([1.0, 5.0], [float("nan"), 1.0], [0.3, 0.9])
    second = alert.drivers[1]
    assert (second.channel, second.actual, second.forecast, second.residual) == ("ch0", 1.0, None, None)
    document = json.loads(encode_alert(alert))
    jsonschema.validate(document, alert_schema())
    assert document["schema_version"] == 2
    assert document["drivers"][1]["forecast"] is None
    assert decode_alert(encode_alert(alert)) == alert
