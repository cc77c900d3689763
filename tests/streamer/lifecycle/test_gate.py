"""Retraining's data split and gate: segments around gaps, the time cut, the margin to beat."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamer.lifecycle.retrain import Readings, gate, prepare


def fleet(devices: int, steps: int) -> Readings:
    ids = np.repeat([f"d{i}" for i in range(devices)], steps)
    ts = np.tile(np.arange(steps, dtype=np.int64) * 1_000, devices)
    values = (np.tile(np.arange(steps, dtype=np.float64), devices)
              + np.repeat(np.arange(devices), steps))[:, None]
    # Read out of order, as partitions interleave.
    order = np.random.default_rng(0).permutation(devices * steps)
    return Readings(ids[order], ts[order], values[order])


def test_no_training_series_spans_an_excluded_gap_and_none_reaches_past_the_cut() -> None:
    readings = fleet(2, 100)
    gap = (readings.device_ids == "d0") & (readings.ts_ms >= 30_000) & (readings.ts_ms < 40_000)
    prepared = prepare(readings, gap, holdout_fraction=0.2, min_series=5)
    assert prepared.cutoff_ms == 79_200  # 0 .. 99 s: the last 20 % of the span starts at 79.2 s
    assert sorted(prepared.train) == ["d0#0", "d0#1", "d1#0"]
    np.testing.assert_array_equal(prepared.train["d0#0"][:, 0], np.arange(30))
    np.testing.assert_array_equal(prepared.train["d0#1"][:, 0], np.arange(40, 80))
    np.testing.assert_array_equal(prepared.train["d1#0"][:, 0], np.arange(80) + 1)
    # Held out: each segment reaching past the cut, whole (context), scored from the cut on.
    assert [(len(h.values), h.start) for h in prepared.holdout] == [(60, 40), (100, 80)]
    assert prepared.counts == {"train": 150, "holdout": 40, "short": 0}


def test_stretches_shorter_than_a_window_train_nothing_and_are_counted() -> None:
    readings = fleet(1, 50)
    # Kept: 0-2 (3 readings), 10-49.
    gap = (readings.ts_ms >= 3_000) & (readings.ts_ms < 10_000)
    prepared = prepare(readings, gap, holdout_fraction=0.3, min_series=8)
    assert sorted(prepared.train) == ["d0#1"]
    assert prepared.counts["short"] == 3
    assert sum(prepared.counts.values()) == int((~gap).sum())


def test_everything_excluded_leaves_nothing() -> None:
    readings = fleet(1, 20)
    prepared = prepare(readings, np.ones(20, dtype=bool), holdout_fraction=0.2, min_series=2)
    assert not prepared.train and not prepared.holdout


@pytest.mark.parametrize(("new", "current", "margin", "passed"), [
    (0.80, 1.00, 0.05, True),
    (0.95, 1.00, 0.05, False),  # exactly the margin is not better by it
    (0.96, 1.00, 0.05, False),
    (1.20, 1.00, 0.00, False),
    (0.99, 1.00, 0.00, True),
])
def test_gate_needs_the_relative_margin(new: float, current: float, margin: float, passed: bool) -> None:
    decision = gate(new, current, margin)
    assert decision.passed is passed
    assert decision.improvement == pytest.approx(1 - new / current)
    assert f"{margin:.1%}" in decision.reason


@pytest.mark.parametrize(("new", "current"), [(math.nan, 1.0), (0.5, 0.0), (0.5, math.inf)])
def test_gate_refuses_what_cannot_be_compared(new: float, current: float) -> None:
    decision = gate(new, current, 0.05)
    assert not decision.passed and math.isnan(decision.improvement)
