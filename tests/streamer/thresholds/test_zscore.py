import pickle

import numpy as np
import numpy.typing as npt
import pytest

from streamer.config import ZScoreConfig
from streamer.state.slot_table import SlotTable
from streamer.thresholds.result import ThresholdResult
from streamer.thresholds.zscore import RollingZScore, tail_score

STATE = ("thr_smoothed", "thr_mean", "thr_var", "thr_count")


def make(channels: int = 1, capacity: int = 4, **overrides: float) -> RollingZScore:
    return RollingZScore(SlotTable(capacity), channels, ZScoreConfig(**overrides))  # type: ignore[arg-type]


def feed(threshold: RollingZScore, residuals: npt.NDArray[np.float64], slot: int = 0,
         scored: bool = True) -> list[ThresholdResult]:
    slots = np.array([slot])
    flags = np.array([scored])
    return [threshold.update(slots, np.atleast_1d(r).reshape(1, -1), flags) for r in residuals]


def snapshot(threshold: RollingZScore) -> dict[str, npt.NDArray[np.generic]]:
    return {name: threshold.table[name].copy() for name in STATE}


def test_tail_score_bounds() -> None:
    z = np.array([-1e9, -3.0, -1.0, 0.0, 1.0, 3.0, 1e9])
    scores = tail_score(z)
    assert ((scores >= 0.0) & (scores <= 1.0)).all()
    assert scores[3] == 0.0
    assert scores[1] == scores[5]  # two-sided
    assert scores[4] < scores[5]
    # s / (1 + s) with s = -ln(2 * Phi(-1)) = -ln(0.3173)
    assert scores[4] == pytest.approx(1.148 / 2.148, abs=1e-3)


def test_tail_score_keeps_ranking_where_erf_saturates() -> None:
    scores = tail_score(np.array([5.0, 9.0, 20.0, 100.0, 1e4]))
    assert (np.diff(scores) > 0).all()
    assert scores[-1] < 1.0


def test_range_floor_keeps_a_step_after_a_flat_stretch_moderate() -> None:
    # Flat at 0 with one earlier excursion to 10: the residual variance is ~0,
    # so min_std alone would make the step to 1.0 a z of ~7e5.
    plain, relative = make(min_std_fraction=0.0), make(min_std_fraction=0.01)
    values = np.array([0.0, 10.0] + [0.0] * 300)
    for threshold in (plain, relative):
        for value in values:
            threshold.update(np.array([0]), np.array([[0.0]]), np.array([True]), np.array([[value]]))
    step = np.array([[1.0]])
    z_plain = plain.update(np.array([0]), step, np.array([True]), step)
    z_relative = relative.update(np.array([0]), step, np.array([True]), step)
    assert z_plain.anomalous[0] and z_relative.anomalous[0]
    # std floor 0.01 * 10 = 0.1: the smoothed step is a few z, not 1e5.
    assert z_relative.score[0] < 0.97 < z_plain.score[0]


def test_no_flags_before_enough_data() -> None:
    threshold = make()
    results = feed(threshold, np.array([0.0, 100.0]))
    assert not any(r.anomalous[0] for r in results)


def test_big_residual_after_stationary_noise_is_flagged() -> None:
    threshold = make()
    noise = 0.1 * np.random.default_rng(0).standard_normal(300)
    results = feed(threshold, noise)
    assert not any(r.anomalous[0] for r in results[50:])
    spike = threshold.update(np.array([0]), np.array([[5.0]]), np.array([True]))
    assert spike.anomalous.tolist() == [True]
    assert spike.score[0] > tail_score(np.array([20.0]))[0]  # ~33 standard deviations after smoothing
    assert spike.channel.tolist() == [0]
    assert spike.threshold[0] > 0  # upper bound on the side of the residual
    assert spike.smoothed[0] > spike.threshold[0]


def test_unscored_rows_are_never_flagged_but_learn() -> None:
    threshold = make()
    feed(threshold, 0.1 * np.random.default_rng(1).standard_normal(100))
    count = int(threshold.table["thr_count"][0])
    result = threshold.update(np.array([0]), np.array([[5.0]]), np.array([False]))
    assert result.anomalous.tolist() == [False]
    assert result.score.tolist() == [0.0]
    assert threshold.table["thr_count"][0] == count + 1


def test_flagged_rows_do_not_update_mean_or_variance() -> None:
    threshold = make(capacity=2)
    rng = np.random.default_rng(2)
    for _ in range(200):
        threshold.update(np.array([0, 1]), 0.1 * rng.standard_normal((2, 1)), np.array([True, True]))
    before = snapshot(threshold)
    result = threshold.update(np.array([0, 1]), np.array([[8.0], [0.01]]), np.array([True, True]))
    assert result.anomalous.tolist() == [True, False]
    for name in ("thr_mean", "thr_var", "thr_count"):
        np.testing.assert_array_equal(threshold.table[name][0], before[name][0], err_msg=name)
        assert not np.array_equal(threshold.table[name][1], before[name][1]), name
    assert threshold.table["thr_count"][1] == before["thr_count"][1] + 1


def test_scores_are_within_unit_interval() -> None:
    threshold = make(capacity=8)
    rng = np.random.default_rng(3)
    slots = np.arange(8)
    for _ in range(60):
        residual = rng.standard_normal((8, 1)) * rng.choice([0.1, 10.0], size=(8, 1))
        result = threshold.update(slots, residual, np.ones(8, dtype=bool))
        assert ((result.score >= 0.0) & (result.score <= 1.0)).all()
        assert np.isfinite(result.threshold).all()


def test_nan_residual_rows_are_ignored() -> None:
    threshold = make(capacity=2)
    feed(threshold, np.array([0.1, -0.1, 0.2, 0.0, -0.2]), slot=0)
    before = snapshot(threshold)
    result = threshold.update(np.array([0, 1]), np.array([[np.nan], [np.nan]]), np.array([True, True]))
    assert result.anomalous.tolist() == [False, False]
    assert result.score.tolist() == [0.0, 0.0]
    for name in STATE:
        np.testing.assert_array_equal(threshold.table[name], before[name], err_msg=name)


def test_multi_channel_picks_the_worst_channel() -> None:
    threshold = make(channels=3)
    rng = np.random.default_rng(4)
    feed(threshold, 0.1 * rng.standard_normal((200, 3)))
    result = threshold.update(np.array([0]), np.array([[0.0, -6.0, 0.05]]), np.array([True]))
    assert result.anomalous.tolist() == [True]
    assert result.channel.tolist() == [1]
    assert result.smoothed[0] < 0
    assert result.threshold[0] < 0  # the lower bound: the residual went negative
    # Each channel's own score; the flagged channel's is the row's.
    scores = result.channel_scores[0]
    assert scores[1] == result.score[0] and scores.argmax() == 1
    assert scores[0] < 0.9 and scores[2] < 0.9


# ---- determinism (the shared contracts: tests/streamer/thresholds/test_contracts.py) ----


def test_deterministic_for_same_inputs() -> None:
    rng = np.random.default_rng(6)
    residuals = rng.standard_normal((150, 2, 1))
    residuals[120, 0, 0] = 40.0
    runs = []
    for _ in range(2):
        threshold = make(capacity=2)
        results = [threshold.update(np.array([0, 1]), r, np.array([True, True])) for r in residuals]
        runs.append((np.array([r.score for r in results]), np.array([r.anomalous for r in results]),
                     snapshot(threshold)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert runs[0][1].any()
    for name in STATE:
        np.testing.assert_array_equal(runs[0][2][name], runs[1][2][name])


def test_state_is_picklable() -> None:
    threshold = make()
    feed(threshold, np.array([0.1, 0.2, -0.1]))
    clone = pickle.loads(pickle.dumps(threshold))  # noqa: S301  # our own object
    args = np.array([0]), np.array([[0.3]]), np.array([True])
    assert clone.update(*args).score.tolist() == threshold.update(*args).score.tolist()


def test_one_channel_decisions_match_the_general_path_with_a_silent_second_channel() -> None:
    # The one-channel shortcut must decide exactly as the general (argmax) path does when a
    # second channel never deviates: channel 0 is then always the one picked.
    rng = np.random.default_rng(11)
    one, two = make(1, capacity=6, min_std_fraction=0.05), make(2, capacity=6, min_std_fraction=0.05)
    flagged = 0
    for step in range(400):
        slots = rng.choice(6, size=int(rng.integers(1, 7)), replace=False)
        residual = rng.normal(0.0, 1.0, size=(len(slots), 1)) * (8.0 if step % 37 == 0 else 1.0)
        residual[rng.random(len(slots)) < 0.05] = np.nan  # rows without a forecast yet
        values = rng.normal(10.0, 3.0, size=(len(slots), 1))
        scored = rng.random(len(slots)) < 0.9
        got = one.update(slots, residual, scored, values)
        want = two.update(slots, np.hstack([residual, np.zeros_like(residual)]), scored,
                          np.hstack([values, np.full_like(values, 5.0)]))
        flagged += int(got.anomalous.sum())
        for name in ("score", "anomalous", "channel", "smoothed", "threshold"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert flagged > 5
