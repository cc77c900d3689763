import numpy as np
import numpy.typing as npt

from streamer.config import StuckConfig
from streamer.state.slot_table import SlotTable
from streamer.thresholds.result import ThresholdResult
from streamer.thresholds.stuck import STUCK_SCORE, StuckSensor, apply_stuck, make_stuck


def judge(stuck: StuckSensor, values: list[float], scored: bool = True) -> list[bool]:
    """Feed one single-channel slot reading by reading; whether each reading is stuck."""
    slot = np.array([0])
    return [bool(stuck.update(slot, np.array([[v]]), np.array([scored]))[0][0]) for v in values]


def varied(n: int, seed: int = 0) -> list[float]:
    """Readings that never repeat."""
    return [float(v) for v in np.random.default_rng(seed).standard_normal(n)]


def runs_of(length: int, count: int, seed: int = 0) -> list[float]:
    """``count`` runs of ``length`` identical readings, each at a new value."""
    return [v for v in varied(count, seed) for _ in range(length)]


def test_exact_repeats_are_flagged_after_min_run_until_the_run_ends() -> None:
    stuck = StuckSensor(SlotTable(1), channels=1, min_run=5, factor=2.0)
    flags = judge(stuck, [*varied(10), *[3.0] * 8, 4.0, 5.0])
    # Runs before were of length 1, so the bar is min_run: the 6th identical reading is stuck.
    assert flags[10:] == [False] * 5 + [True] * 3 + [False, False]
    assert not any(flags[:10])


def test_only_the_first_stuck_reading_of_a_run_is_new() -> None:
    stuck = StuckSensor(SlotTable(1), channels=1, min_run=2, factor=1.0)
    slot, scored = np.array([0]), np.array([True])
    readings = [1.0, 2.0, 7.0, 7.0, 7.0, 7.0, 7.0]
    newly = [bool(stuck.update(slot, np.array([[v]]), scored)[1][0]) for v in readings]
    assert newly == [False, False, False, False, True, False, False]


def test_a_naturally_flat_channel_is_not_flagged_for_a_run_of_its_usual_length() -> None:
    # Runs of 12 are this device's normal: far above min_run, but it has shown them
    # (the first began before min_readings, so it teaches without being judged).
    history = runs_of(12, 10)
    usual = judge(StuckSensor(SlotTable(1), 1, min_run=5, factor=3.0, min_readings=1),
                  [*history, *[9.0] * 12, 1.0])
    assert not any(usual)
    # Past factor x its longest normal run (36) the same channel is stuck.
    long_run = judge(StuckSensor(SlotTable(1), 1, min_run=5, factor=3.0, min_readings=1),
                     [*history, *[9.0] * 40])
    assert long_run[len(history):].index(True) == 36
    # Without that history the same 12 readings would be stuck.
    assert any(judge(StuckSensor(SlotTable(1), 1, min_run=5, factor=3.0, min_readings=1),
                     [*varied(120), *[9.0] * 12]))


def test_a_flagged_run_does_not_raise_the_normal_longest_run() -> None:
    stuck = StuckSensor(SlotTable(1), channels=1, min_run=5, factor=2.0)
    first = judge(stuck, [*varied(20), *[1.0] * 30, 2.0])
    assert sum(first) == 25  # run readings 6..30
    # Had that run taught the device, a run of 8 would be far below 2 x 30.
    again = judge(stuck, [*varied(20, seed=1), *[3.0] * 8])
    assert again[-2:] == [True, True]
    assert stuck.table["stk_longest"][0, 0] == 1


def test_a_run_that_began_before_min_readings_is_never_stuck_and_teaches() -> None:
    stuck = StuckSensor(SlotTable(1), channels=1, min_run=5, factor=2.0, min_readings=10)
    # Constant from the first reading: no history to judge it by.
    flags = judge(stuck, [*[0.0] * 50, *varied(30), *[4.0] * 60, *[5.0] * 130])
    assert not any(flags[:140])
    # The 60-reading run (began after 80 readings) is normal next to the 50 before it,
    # and teaches in turn: the next run is stuck past 2 x 60.
    assert flags[140:].index(True) == 120


def test_tolerance_joins_readings_close_to_the_runs_first_one() -> None:
    # A range of 100; afterwards the signal collapses to jitter of +-0.05 around 50.
    history = [0.0, 100.0, *varied(30)]
    jitter = (50.0 + 0.05 * np.sin(np.arange(20))).tolist()
    loose = judge(StuckSensor(SlotTable(1), 1, min_run=5, factor=2.0, tolerance=0.001), [*history, *jitter])
    exact = judge(StuckSensor(SlotTable(1), 1, min_run=5, factor=2.0), [*history, *jitter])
    assert loose[len(history):].index(True) == 5  # within 0.1 of 50.0: one run
    assert not any(exact)
    # A step bigger than the tolerance ends the run.
    stepped = judge(StuckSensor(SlotTable(1), 1, min_run=5, factor=2.0, tolerance=0.001),
                    [*history, *[50.0] * 4, 50.2, *[50.2] * 4])
    assert not any(stepped)


def test_tolerance_range_is_declared_only_when_used() -> None:
    assert "stk_low" not in StuckSensor(SlotTable(1), 1, min_run=5, factor=2.0).table
    assert "stk_low" in StuckSensor(SlotTable(1), 1, min_run=5, factor=2.0, tolerance=0.01).table


def test_multi_channel_names_the_stuck_channel() -> None:
    stuck = StuckSensor(SlotTable(2), channels=3, min_run=4, factor=2.0)
    slots = np.array([0, 1])
    rng = np.random.default_rng(3)
    results = []
    for step in range(20):
        values = rng.standard_normal((2, 3))
        if step >= 10:
            values[1, 2] = 7.0  # slot 1, channel 2 stops moving
        results.append(stuck.update(slots, values, np.ones(2, bool)))
    flagged = np.array([r[0] for r in results])
    assert not flagged[:, 0].any()
    assert flagged[:, 1].tolist() == [False] * 14 + [True] * 6
    assert results[-1][2][1] == 2


def test_nan_readings_leave_the_run_alone_and_unscored_rows_are_not_flagged() -> None:
    stuck = StuckSensor(SlotTable(1), channels=1, min_run=3, factor=1.0)
    flags = judge(stuck, [*varied(5), 2.0, 2.0, np.nan, 2.0])
    assert flags[-2:] == [False, False]  # the NaN neither ends nor extends the run of 2.0
    assert stuck.table["stk_run"][0, 0] == 3
    assert judge(stuck, [2.0, 2.0], scored=False) == [False, False]
    assert stuck.table["stk_run"][0, 0] == 5  # unscored readings still extend the run
    assert judge(stuck, [2.0]) == [True]


def decision(n: int) -> ThresholdResult:
    """A calm two-channel decision: channel 0 scores 0.25, channel 1 scores 0.1."""
    return ThresholdResult(score=np.full(n, 0.25), anomalous=np.zeros(n, bool),
                           channel=np.zeros(n, np.intp), smoothed=np.zeros(n), threshold=np.ones(n),
                           channel_scores=np.tile([0.25, 0.1], (n, 1)))


def test_apply_stuck_scores_the_first_stuck_reading_and_keeps_the_flag() -> None:
    stuck = StuckSensor(SlotTable(2), channels=2, min_run=3, factor=1.0)
    slots = np.array([0, 1])
    rng = np.random.default_rng(5)
    results = []
    for step in range(12):
        values: npt.NDArray[np.float64] = rng.standard_normal((2, 2))
        if step >= 4:
            values[0, 1] = 1.5
        scored = np.array([True, step < 8])
        results.append(apply_stuck(stuck, slots, values, scored, decision(2)))
    anomalous = [bool(r.anomalous[0]) for r in results]
    assert anomalous == [False] * 7 + [True] * 5
    assert [float(r.score[0]) for r in results[7:]] == [STUCK_SCORE, 0.25, 0.25, 0.25, 0.25]
    assert all(int(r.channel[0]) == 1 for r in results[7:])
    # The stuck channel carries the row's score: STUCK_SCORE first, then the method's.
    assert [r.channel_scores[0].tolist() for r in results[7:9]] == [[0.25, STUCK_SCORE], [0.25, 0.25]]
    assert all(r.channel_scores[1].tolist() == [0.25, 0.1] for r in results)
    assert not any(bool(r.anomalous[1]) for r in results)  # slot 1 never repeats


def test_make_stuck_follows_the_config() -> None:
    assert make_stuck(SlotTable(1), 1, StuckConfig(enabled=False)) is None
    stuck = make_stuck(SlotTable(1), 1, StuckConfig(min_run=7, factor=3.0, tolerance=0.01, min_readings=9))
    assert stuck is not None
    assert (stuck.min_run, stuck.factor, stuck.tolerance, stuck.min_readings) == (7, 3.0, 0.01, 9)
