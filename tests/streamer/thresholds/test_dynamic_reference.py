import math

import numpy as np
import pytest

from streamer.config import DynamicThresholdConfig
from streamer.thresholds.dynamic_reference import (
    evaluate_window,
    group_sequences,
    non_anomalous_max,
    prune,
    run_reference,
    score_candidate,
    select_epsilon,
    side_score,
    z_grid,
)

# Nine calm points and one spike: mean 1.9, population std 2.7.
SPIKE = np.array([1.0] * 9 + [10.0])


def test_score_formula_by_hand() -> None:
    config = DynamicThresholdConfig(error_buffer=0)
    candidate = score_candidate(SPIKE, 1.9, 2.7, 2.5, config)
    # eps = 1.9 + 2.5 * 2.7 = 8.65: only the spike is above; the rest is all ones
    # (mean 1, std 0), so dmu = 0.9 and dsigma = 2.7.
    assert candidate.epsilon == pytest.approx(8.65)
    assert (candidate.above, candidate.sequences) == (1, 1)
    assert candidate.score == pytest.approx((0.9 / 1.9 + 2.7 / 2.7) / (1**2 + 1))
    assert candidate.qualifies


def test_score_counts_squared_sequences_and_points() -> None:
    values = np.array([1.0, 1.0, 9.0, 1.0, 1.0, 1.0, 9.0, 9.0, 1.0, 1.0])
    mu, sigma = float(np.mean(values)), float(np.std(values))
    rest = np.ones(7)
    # Two points apart by 4 readings: separate sequences with buffer 1, one with buffer 2.
    for buffer, sequences in ((1, 2), (2, 1)):
        candidate = score_candidate(values, mu, sigma, 0.5, DynamicThresholdConfig(error_buffer=buffer))
        expected = ((mu - rest.mean()) / mu + (sigma - rest.std()) / sigma) / (sequences**2 + 3)
        assert (candidate.above, candidate.sequences) == (3, sequences)
        assert candidate.score == pytest.approx(expected)


def test_candidates_are_rejected_by_the_guardrails() -> None:
    values = np.array([1.0, 8.0, 1.0, 8.0, 1.0, 8.0, 1.0, 1.0, 1.0, 1.0])
    mu, sigma = float(np.mean(values)), float(np.std(values))
    strict = DynamicThresholdConfig(error_buffer=0, max_sequences=2)
    too_many = score_candidate(values, mu, sigma, 0.5, strict)
    assert too_many.sequences == 3
    assert not math.isnan(too_many.score)
    assert not too_many.qualifies
    enough = score_candidate(values, mu, sigma, 0.5, DynamicThresholdConfig(error_buffer=0, max_sequences=3))
    assert enough.qualifies
    # 3 of 10 points above: rejected once max_fraction * 10 <= 3.
    assert not score_candidate(values, mu, sigma, 0.5, DynamicThresholdConfig(max_fraction=0.3)).qualifies
    assert score_candidate(values, mu, sigma, 0.5, DynamicThresholdConfig(max_fraction=0.31)).qualifies
    nothing = score_candidate(values, mu, sigma, 5.0, DynamicThresholdConfig())
    assert nothing.above == 0
    assert math.isnan(nothing.score)
    assert not nothing.qualifies


def test_selection_prefers_the_best_score_and_falls_back_to_z_max() -> None:
    config = DynamicThresholdConfig(error_buffer=0)
    selection = select_epsilon(SPIKE, 1.9, 2.7, config)
    qualifying = [c for c in selection.candidates if c.qualifies]
    assert not selection.fallback
    assert selection.z == max(c.z for c in qualifying if c.score == max(q.score for q in qualifying))
    assert selection.epsilon == pytest.approx(1.9 + selection.z * 2.7)
    calm = np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95])
    mu, sigma = float(np.mean(calm)), float(np.std(calm))
    fallback = select_epsilon(calm, mu, sigma, config)
    assert fallback.fallback
    assert fallback.epsilon == mu + config.z_max * sigma


def test_ties_go_to_the_largest_z() -> None:
    # A huge spike: several candidates flag exactly the same single point.
    values = np.array([1.0] * 99 + [1000.0])
    mu, sigma = float(np.mean(values)), float(np.std(values))
    selection = select_epsilon(values, mu, sigma, DynamicThresholdConfig(error_buffer=0))
    tied = [c for c in selection.candidates if c.qualifies]
    assert len(tied) > 1
    assert len({c.score for c in tied}) == 1
    assert selection.z == tied[-1].z


@pytest.mark.parametrize(
    ("indices", "buffer", "expected"),
    [
        ([3, 4, 10, 30], 3, [[3, 4, 10], [30]]),
        ([0, 7, 15], 3, [[0, 7], [15]]),  # 7 = 2*3 + 1 apart joins, 8 apart splits
        ([5, 6, 8], 0, [[5, 6], [8]]),  # no buffer: consecutive only
        ([], 5, []),
    ],
)
def test_error_buffer_grouping(indices: list[int], buffer: int, expected: list[list[int]]) -> None:
    assert group_sequences(indices, buffer) == expected


def test_non_anomalous_max_skips_the_buffer_around_flagged_points() -> None:
    values = np.array([1.0, 3.0, 9.0, 4.0, 2.0, 0.5])
    assert non_anomalous_max(values, [2], error_buffer=1) == 2.0
    assert non_anomalous_max(values, [2], error_buffer=0) == 4.0
    assert non_anomalous_max(values, [2], error_buffer=10) == 4.0  # every point is near: largest unflagged


@pytest.mark.parametrize(
    ("peaks", "nominal", "kept"),
    [
        ([10.0, 9.5, 3.0], 2.9, [True, True, False]),  # 3.0 is within 13% of the nominal max
        ([3.0, 10.0, 9.5], 2.9, [False, True, True]),  # order of the input does not matter
        ([10.0, 9.5, 9.0], 2.0, [True, True, True]),  # small steps above the last big drop are kept
        ([10.0, 5.0, 4.8], 4.5, [True, False, False]),  # the last significant drop is 10 -> 5
        ([3.0], 2.9, [False]),
        ([5.0], 1.0, [True]),
    ],
)
def test_pruning_keeps_what_is_above_the_last_significant_drop(
    peaks: list[float], nominal: float, kept: list[bool]
) -> None:
    result, cut = prune(peaks, nominal, p=0.13)
    assert result == kept
    assert [peak >= cut for peak in peaks] == kept


def test_pruning_cut_admits_a_new_peak_only_past_the_drop() -> None:
    _, cut = prune([10.0, 9.5, 3.0], 2.9, p=0.13)
    assert cut == pytest.approx(3.0 / 0.87)
    # Re-running the paper's rule with a new peak inserted agrees with the cut.
    for new in (3.2, 3.4, 3.5, 5.0, 9.7, 11.0):
        kept, _ = prune([10.0, 9.5, 3.0, new], 2.9, p=0.13)
        assert kept[-1] == (new >= cut), new


def test_inverted_search_catches_a_drop() -> None:
    rng = np.random.default_rng(0)
    window = 1.0 + 0.05 * rng.standard_normal(300)
    window[150:160] = 0.05
    evaluation = evaluate_window(window, DynamicThresholdConfig(error_buffer=2))
    high, low = evaluation.sides
    assert not any(high.kept)
    assert [s for s, k in zip(low.sequences, low.kept, strict=True) if k] == [list(range(150, 160))]
    assert 2 * evaluation.mu - low.epsilon > 0.05  # the bound on the error itself


def test_evaluation_points_and_judging_between_them() -> None:
    config = DynamicThresholdConfig(window=200, smoothing_span=1, min_history=60, decision_interval=25,
                                    error_buffer=2)
    rng = np.random.default_rng(1)
    residual = 0.1 * rng.standard_normal(200)
    residual[3] = np.nan
    residual[130] = 5.0  # between the evaluations at rows 110 and 135
    run = run_reference(residual, config)
    # Evaluations at the 60th, 85th, ... valid reading; row 3 does not count.
    assert np.flatnonzero(run.evaluated).tolist() == [60, 85, 110, 135, 160, 185]
    assert np.isnan(run.smoothed[3])
    assert not run.flagged[:60].any()
    assert run.flagged[130]
    assert run.score[130] >= 0.5
    np.testing.assert_array_equal(run.epsilon[110:135], np.tile(run.epsilon[110], (25, 1)))


def test_flagged_readings_stay_in_the_history() -> None:
    config = DynamicThresholdConfig(window=100, smoothing_span=1, min_history=50, decision_interval=10,
                                    error_buffer=1)
    residual = 0.1 * np.random.default_rng(2).standard_normal(100)
    calm = run_reference(residual, config)
    residual[72] = 5.0
    spiked = run_reference(residual, config)
    assert spiked.flagged[72]
    # The next evaluation's statistics include the flagged reading.
    assert spiked.sigma[80] > 3 * calm.sigma[80]
    assert spiked.mu[80] > calm.mu[80]


def test_side_score_is_monotone_and_split_at_one_half() -> None:
    calm = [side_score(v, False, mu=1.0, sigma=1.0, epsilon=4.0) for v in (0.0, 1.0, 2.0, 4.0, 100.0)]
    flagged = [side_score(v, True, mu=1.0, sigma=1.0, epsilon=4.0) for v in (4.001, 5.0, 100.0)]
    assert calm == sorted(calm)
    assert calm[0] == calm[1] == 0.0
    assert max(calm) < 0.5
    assert flagged == sorted(flagged)
    assert min(flagged) >= 0.5


def test_z_grid_is_inclusive() -> None:
    assert z_grid(DynamicThresholdConfig()) == [2.5 + 0.5 * g for g in range(19)]
