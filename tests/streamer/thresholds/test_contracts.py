"""Contract checks every per-device detection unit must keep, run over all of them.

Each unit keeps its state in the device slot table and is driven one round of
distinct slots at a time. For each: its inputs are not mutated; the same
inputs give the same outputs and the same state; and a round of several
slots is exactly those slots advanced one by one (a device's state never
depends on which others share its batch). The units: the three threshold
methods, the record gate, range novelty, the stuck-sensor check and the
alert episode tracker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pytest

from streamer.alerts.episodes import EpisodeTracker
from streamer.config import AlertsConfig, RangeNoveltyConfig, RecordGateConfig, StuckConfig, ThresholdsConfig
from streamer.state.slot_table import SlotTable
from streamer.thresholds import make_threshold
from streamer.thresholds.novelty import make_novelty
from streamer.thresholds.record import ResidualRecord
from streamer.thresholds.stuck import make_stuck

CHANNELS = 2
SLOTS = 3
ROUNDS = 260
Arrays = tuple[npt.NDArray[Any], ...]


@dataclass(frozen=True)
class Round:
    """One round's inputs for the rows of ``slots``."""

    slots: npt.NDArray[np.intp]
    residual: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    scored: npt.NDArray[np.bool_]
    ts: npt.NDArray[np.int64]

    def rows(self, keep: npt.NDArray[np.bool_]) -> Round:
        return Round(self.slots[keep], self.residual[keep], self.values[keep], self.scored[keep],
                     self.ts[keep])

    def arrays(self) -> Arrays:
        return self.slots, self.residual, self.values, self.scored, self.ts


Step = Callable[[Round], Arrays]


def _threshold(method: str) -> Callable[[SlotTable], Step]:
    def build(table: SlotTable) -> Step:
        config = msgspec.structs.replace(ThresholdsConfig(), method=method, warmup=0)
        threshold = make_threshold(table, CHANNELS, config)

        def step(r: Round) -> Arrays:
            result = threshold.update(r.slots, r.residual, r.scored, r.values)
            return result.score, result.anomalous, result.channel, result.smoothed, result.threshold
        return step
    return build


def _record_gate(table: SlotTable) -> Step:
    record = ResidualRecord(table, CHANNELS, horizon=RecordGateConfig().horizon, min_readings=10)

    def step(r: Round) -> Arrays:
        channel = np.argmax(np.abs(np.nan_to_num(r.residual)), axis=1)
        return (record.update(r.slots, np.where(r.scored[:, None], r.residual, np.nan), channel),)
    return step


def _range_novelty(table: SlotTable) -> Step:
    novelty = make_novelty(table, CHANNELS, RangeNoveltyConfig(margin=0.02))
    assert novelty is not None

    def step(r: Round) -> Arrays:
        return novelty.update(r.slots, r.values)
    return step


def _stuck(table: SlotTable) -> Step:
    stuck = make_stuck(table, CHANNELS, StuckConfig())
    assert stuck is not None

    def step(r: Round) -> Arrays:
        return stuck.update(r.slots, r.values, r.scored)
    return step


def _episodes(table: SlotTable) -> Step:
    tracker = EpisodeTracker(table, msgspec.structs.replace(AlertsConfig(), resolve_after=5))

    def step(r: Round) -> Arrays:
        anomalous = np.abs(np.nan_to_num(r.residual[:, 0])) > 2.0
        changes = tracker.update(r.slots, r.ts, anomalous, np.where(anomalous, 0.99, 0.1), r.scored)
        return changes.opened, changes.updated, changes.resolved, changes.episode_start
    return step


UNITS: dict[str, Callable[[SlotTable], Step]] = {
    "zscore": _threshold("zscore"),
    "dynamic": _threshold("dynamic"),
    "likelihood": _threshold("likelihood"),
    "record_gate": _record_gate,
    "range_novelty": _range_novelty,
    "stuck": _stuck,
    "episodes": _episodes,
}


def rounds(seed: int) -> list[Round]:
    """Noisy readings with a spike, a level shift, a stuck stretch, NaNs and warm-up rows."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(ROUNDS):
        values = 10.0 + rng.standard_normal((SLOTS, CHANNELS))
        if t >= 150:
            values[1] += 6.0  # a level shift on slot 1
        if 200 <= t < 240:
            values[2] = 3.25  # slot 2 stuck
        residual = rng.standard_normal((SLOTS, CHANNELS))
        if t in (120, 121):
            residual[0, 1] = 25.0  # a spike on slot 0
        if t % 37 == 5:
            residual[2, 0] = np.nan  # a row with no forecast
        scored = np.full(SLOTS, t >= 20) & np.isfinite(residual).all(axis=1)
        out.append(Round(np.array([2, 0, 1], dtype=np.intp), residual, values, scored,
                         np.full(SLOTS, 1_700_000_000_000 + 1000 * t, dtype=np.int64)))
    return out


def run(unit: str, schedule: list[Round]) -> tuple[list[Arrays], SlotTable]:
    table = SlotTable(SLOTS)
    step = UNITS[unit](table)
    return [step(r) for r in schedule], table


def state(table: SlotTable) -> dict[str, npt.NDArray[Any]]:
    return {name: table[name].copy() for name in table.fields}


def assert_same(a: dict[str, npt.NDArray[Any]], b: dict[str, npt.NDArray[Any]]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("unit", list(UNITS))
def test_inputs_are_not_mutated(unit: str) -> None:
    schedule = rounds(1)
    copies = [tuple(a.copy() for a in r.arrays()) for r in schedule]
    run(unit, schedule)
    for r, copy in zip(schedule, copies, strict=True):
        for array, before in zip(r.arrays(), copy, strict=True):
            np.testing.assert_array_equal(array, before)


@pytest.mark.parametrize("unit", list(UNITS))
def test_same_inputs_give_the_same_outputs_and_state(unit: str) -> None:
    (first, first_table), (second, second_table) = run(unit, rounds(2)), run(unit, rounds(2))
    for a, b in zip(first, second, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    assert_same(state(first_table), state(second_table))
    assert any(np.any(output) for outputs in first for output in outputs)  # the unit did something


@pytest.mark.parametrize("unit", list(UNITS))
def test_a_round_of_several_devices_equals_each_device_alone(unit: str) -> None:
    schedule = rounds(3)
    _, together = run(unit, schedule)
    alone = SlotTable(SLOTS)
    step = UNITS[unit](alone)
    for r in schedule:
        for slot in r.slots.tolist():
            step(r.rows(r.slots == slot))
    assert_same(state(together), state(alone))


@pytest.mark.parametrize("channels", [1, CHANNELS])
@pytest.mark.parametrize("method", ["zscore", "dynamic", "likelihood"])
def test_channel_scores_explain_the_score(method: str, channels: int) -> None:
    # Every method scores each channel; a judged row's score is that of its
    # channel, the highest; a row that is not judged scores 0 on every channel.
    config = msgspec.structs.replace(ThresholdsConfig(), method=method, warmup=0)
    threshold = make_threshold(SlotTable(SLOTS), channels, config)
    judged_scores = 0
    for r in rounds(4):
        result = threshold.update(r.slots, r.residual[:, :channels], r.scored, r.values[:, :channels])
        judged = r.scored & np.isfinite(r.residual[:, :channels]).all(axis=1)
        scores = result.channel_scores
        assert scores.shape == (len(r.slots), channels) and scores.dtype == np.float64
        assert ((scores >= 0) & (scores <= 1)).all()
        assert (scores[~judged] == 0).all()
        rows = np.flatnonzero(judged)
        np.testing.assert_array_equal(result.score[rows], scores[rows, result.channel[rows]])
        np.testing.assert_array_equal(scores[rows].max(axis=1), result.score[rows])
        judged_scores += int(np.count_nonzero(scores[rows]))
    assert judged_scores  # there was something to explain
