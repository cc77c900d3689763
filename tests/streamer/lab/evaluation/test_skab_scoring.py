"""SKAB's scores on small cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamer.lab.evaluation import skab_scoring
from streamer.lab.evaluation.nab_scoring import REWARD_LOW_FN_RATE, REWARD_LOW_FP_RATE, STANDARD, Profile
from streamer.lab.evaluation.skab_scoring import (
    Confusion,
    ScoredPart,
    changepoints,
    confusion,
    detection_windows,
    normalised,
    score_changepoints,
    score_corpus,
    window_reward,
)

SECOND = 1000


def flags(*bits: int) -> np.ndarray:
    return np.array(bits, dtype=np.bool_)


def test_point_wise_counts_pool_every_experiment_before_the_rates() -> None:
    # Experiment A: labels 0 0 1 1 1 0, prediction 0 1 1 1 0 0 -> TP 2, TN 2, FP 1, FN 1.
    a = confusion(flags(0, 0, 1, 1, 1, 0), flags(0, 1, 1, 1, 0, 0))
    # Experiment B: labels 1 1 0 0, prediction 0 0 0 0 -> TP 0, TN 2, FP 0, FN 2.
    b = confusion(flags(1, 1, 0, 0), flags(0, 0, 0, 0))
    assert a == Confusion(tp=2, tn=2, fp=1, fn=1)
    pooled = skab_scoring.total([a, b])
    assert pooled == Confusion(tp=2, tn=4, fp=1, fn=3)
    assert pooled.f1 == pytest.approx(2 / (2 + (3 + 1) / 2))  # 0.5
    assert pooled.far == pytest.approx(100 * 1 / 5)  # 20 %
    assert pooled.mar == pytest.approx(100 * 3 / 5)  # 60 %


def test_the_null_detector_misses_everything_and_raises_no_alarm() -> None:
    counts = confusion(flags(0, 1, 1, 0), flags(0, 0, 0, 0))
    assert (counts.f1, counts.far, counts.mar) == (0.0, 0.0, 100.0)


def test_changepoints_are_every_change_of_the_prediction_as_skab_takes_them() -> None:
    prediction = flags(1, 0, 0, 1, 1, 1, 0, 0)
    assert changepoints(prediction).astype(int).tolist() == [1, 1, 0, 1, 0, 0, 1, 0]
    assert changepoints(prediction, onsets_only=True).astype(int).tolist() == [1, 0, 0, 1, 0, 0, 0, 0]
    assert not changepoints(flags(0, 0, 0)).any()


def test_windows_open_at_each_changepoint_and_the_later_one_is_cut() -> None:
    assert detection_windows([100 * SECOND], 60 * SECOND) == [(100_000, 160_000)]
    # The second window would start inside the first: it starts where the first ends.
    assert detection_windows([0, 30 * SECOND, 90 * SECOND], 60 * SECOND) == [
        (0, 60_000), (60_000, 90_000), (90_000, 150_000)]


def test_reward_falls_from_a_tp_at_the_window_start_to_a_fp_at_its_end() -> None:
    assert window_reward(0.0, STANDARD) == pytest.approx(1.0)
    assert window_reward(1.0, STANDARD) == pytest.approx(-0.11)
    assert window_reward(1.0, REWARD_LOW_FP_RATE) == pytest.approx(-0.22)
    # A quarter of the way in: step 250 of 1000 on [-pi/2, pi/2], x = -pi/2 + 250 pi / 999,
    # y = (1 + 0.11) / 2 * (-tanh(x) / tanh(pi/2)) + (1 + 0.11) / 2 - 0.11.
    x = -math.pi / 2 + 250 * math.pi / 999
    expected = 0.555 * -math.tanh(x) / math.tanh(math.pi / 2) + 0.445
    assert window_reward(0.25, STANDARD) == pytest.approx(expected)
    assert window_reward(0.25, STANDARD) == pytest.approx(0.84157, abs=1e-5)


def experiment(n: int, labelled: list[int], detected: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One row per second; changepoints at the given rows."""
    ts = np.arange(n, dtype=np.int64) * SECOND
    marks = np.zeros((2, n), dtype=np.bool_)
    marks[0, labelled] = True
    marks[1, detected] = True
    return ts, marks[0], marks[1]


@pytest.mark.parametrize("profile", [STANDARD, REWARD_LOW_FP_RATE, REWARD_LOW_FN_RATE])
def test_perfect_detector_scores_100_and_null_detector_0(profile: Profile) -> None:
    ts, labelled, _ = experiment(300, [50, 200], [])
    perfect = score_changepoints(ts, labelled, labelled, width_ms=60 * SECOND, profile=profile)
    null = score_changepoints(ts, labelled, np.zeros_like(labelled), width_ms=60 * SECOND, profile=profile)
    assert perfect.normalised == pytest.approx(100.0)
    assert null.normalised == pytest.approx(0.0)
    assert (perfect.tp, perfect.fp, perfect.fn) == (2, 0, 0)
    assert (null.tp, null.fp, null.fn) == (0, 0, 2)


def test_a_late_detection_and_a_false_alarm_worked_out_by_hand() -> None:
    # Window [10 s, 70 s]; detections at 25 s (a quarter in), 40 s (free: not the first) and 200 s (FP).
    ts, labelled, detected = experiment(300, [10], [25, 40, 200])
    score = score_changepoints(ts, labelled, detected, width_ms=60 * SECOND, profile=STANDARD)
    assert (score.tp, score.fp, score.fn) == (1, 1, 0)
    assert score.raw == pytest.approx(0.84157 - 0.11, abs=1e-5)
    assert (score.null, score.perfect) == (-1.0, 1.0)
    # 100 * (0.73157 + 1) / (1 + 1)
    assert score.normalised == pytest.approx(86.58, abs=0.01)


def test_false_alarms_before_between_and_after_windows_each_cost_a_fp() -> None:
    ts, labelled, detected = experiment(400, [100, 250], [5, 200, 320, 399])
    score = score_changepoints(ts, labelled, detected, width_ms=60 * SECOND, profile=REWARD_LOW_FP_RATE)
    # 5 s is before the first window, 200 s between [100, 160] and [250, 310], 320 and 399 after.
    assert (score.tp, score.fp, score.fn) == (0, 4, 2)
    assert score.raw == pytest.approx(-2 * 1.0 - 4 * 0.22)


def test_a_detection_on_the_shared_edge_of_cut_windows_counts_for_both() -> None:
    ts, labelled, detected = experiment(200, [0, 30], [60])
    score = score_changepoints(ts, labelled, detected, width_ms=60 * SECOND, profile=STANDARD)
    # Windows [0, 60] and [60, 90]: the end of the first (A_fp) and the start of the second (A_tp).
    assert (score.tp, score.fp, score.fn) == (2, 0, 0)
    assert score.raw == pytest.approx(-0.11 + 1.0)


def test_the_corpus_sums_experiments_before_normalising() -> None:
    ts_a, labelled_a, _ = experiment(200, [50], [])
    ts_b, labelled_b, _ = experiment(200, [20, 120], [])
    experiments = [
        ScoredPart(ts_a, labelled_a, labelled_a.copy()),  # a one-row episode on the changepoint
        ScoredPart(ts_b, labelled_b, np.zeros_like(labelled_b)),  # nothing detected
    ]
    scores = score_corpus(experiments, width_ms=60 * SECOND)
    standard = scores[STANDARD.name]
    # A: episode on row 50 only -> changepoints at 50 (in the window, A_tp) and 51 (in the window, free).
    # Raw 1 - 2 = -1, null -3, perfect 3: 100 * 2 / 6. Averaging the experiments would give 50.
    assert (standard.raw, standard.null, standard.perfect) == pytest.approx((-1.0, -3.0, 3.0))
    assert normalised(scores)[STANDARD.name] == pytest.approx(33.33)
    assert set(normalised(scores)) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}


def test_an_episode_ends_in_a_false_alarm_outside_the_window_unless_only_onsets_count() -> None:
    ts, labelled, _ = experiment(300, [50], [])
    predicted = np.zeros(300, dtype=np.bool_)
    predicted[50:200] = True  # turns on at the changepoint, off 150 s later
    both = score_corpus([ScoredPart(ts, labelled, predicted)], width_ms=60 * SECOND)[STANDARD.name]
    onsets = score_corpus([ScoredPart(ts, labelled, predicted)], width_ms=60 * SECOND,
                          onsets_only=True)[STANDARD.name]
    assert (both.tp, both.fp) == (1, 1)
    assert (onsets.tp, onsets.fp) == (1, 0)
    assert onsets.normalised == pytest.approx(100.0)


def test_a_corpus_without_changepoints_has_no_normalised_score() -> None:
    ts, labelled, detected = experiment(100, [], [10])
    with pytest.raises(ValueError, match="undefined"):
        _ = score_changepoints(ts, labelled, detected, width_ms=60 * SECOND, profile=STANDARD).normalised


def test_tables_place_ours_among_the_published_rows() -> None:
    outliers = skab_scoring.format_outlier_table({"mine": Confusion(tp=6, tn=10, fp=2, fn=2)})
    lines = outliers.splitlines()
    assert lines[0].split() == ["detector", "F1", "FAR", "%", "MAR", "%"]
    mine = next(line for line in lines if "mine" in line)
    assert mine.startswith("* ") and mine.split()[2:] == ["0.75", "16.67", "25.00"]
    # Sorted by F1: 0.75 sits between LSTM-AE (0.74) and T-squared+Q (0.76).
    names = [line[2:].split("  ")[0] for line in lines[1:]]
    assert names.index("mine") == names.index("LSTM-AE") - 1
    changepoint = skab_scoring.format_changepoint_table(
        {"mine": {"standard": 50.0, "reward_low_FP_rate": 40.0, "reward_low_FN_rate": 60.0}}, 30)
    assert "* mine" in changepoint and "Vanilla LSTM" in changepoint and "-14.95" in changepoint
