import pickle
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pytest
from scipy.special import erf, ndtri

from streamer.config import LikelihoodConfig, ThresholdsConfig
from streamer.state.slot_table import SlotTable
from streamer.thresholds.likelihood import (
    MIN_RESIDUAL_SAMPLES,
    QUANTUM,
    AnomalyLikelihood,
    channel_weights,
    likelihood_of_scores,
    raw_score,
    yellow_level,
)
from streamer.thresholds.result import ThresholdResult

Array = npt.NDArray[np.float64]
HISTORY = ("lik_hist", "lik_hist_count", "lik_hist_sum", "lik_hist_sumsq")
RESIDUAL = ("lik_res_mean", "lik_res_var", "lik_res_count")
# Small windows so that learning, re-estimation and ring wrap-around happen in few readings.
# Readings before the first raw score: the residual scale needs
# MIN_RESIDUAL_SAMPLES, each learned short_window - 1 readings late.
SMALL = {"short_window": 8, "history": 60, "learning_period": 30, "reestimation_period": 7}


WARM = MIN_RESIDUAL_SAMPLES + SMALL["short_window"] - 1


def make(channels: int = 1, capacity: int = 4, **likelihood: Any) -> AnomalyLikelihood:
    # The window estimator unless asked: most tests below check the window's ring exactly.
    likelihood = {"estimator": "window", **likelihood}
    config = ThresholdsConfig(likelihood=LikelihoodConfig(**likelihood))
    return AnomalyLikelihood(SlotTable(capacity), channels, config)


def feed(threshold: AnomalyLikelihood, residuals: Array, slot: int = 0,
         scored: bool = True) -> list[ThresholdResult]:
    slots = np.array([slot])
    flags = np.array([scored])
    return [threshold.update(slots, np.atleast_1d(r).reshape(1, -1), flags) for r in residuals]


def state(threshold: AnomalyLikelihood) -> dict[str, npt.NDArray[np.generic]]:
    return {name: threshold.table[name].copy() for name in threshold.table.fields if name.startswith("lik_")}


def calm(n: int, seed: int, channels: int = 1) -> Array:
    return np.random.default_rng(seed).standard_normal((n, channels))


def test_raw_score_is_uniform_for_gaussian_noise() -> None:
    rng = np.random.default_rng(0)
    for channels in (1, 3, 19):
        score, channel = raw_score(rng.standard_normal((200_000, channels)))
        assert ((score >= 0.0) & (score <= 1.0)).all()
        assert channel.min() >= 0 and channel.max() < channels
        # Uniform(0, 1): mean 1/2, variance 1/12, deciles evenly spaced.
        assert score.mean() == pytest.approx(0.5, abs=0.005)
        assert score.var() == pytest.approx(1 / 12, abs=0.002)
        np.testing.assert_allclose(np.quantile(score, [0.1, 0.5, 0.9]), [0.1, 0.5, 0.9], atol=0.01)


def test_raw_score_picks_the_worst_channel() -> None:
    score, channel = raw_score(np.array([[0.1, -7.0, 0.5], [2.0, 0.0, 0.0]]))
    assert channel.tolist() == [1, 0]
    assert score[0] > 0.999
    assert score[1] < score[0]


def test_yellow_level_is_below_the_red_line() -> None:
    for threshold in (0.5, 0.9, 0.99, 0.9999, 0.999999):
        assert 0.0 < yellow_level(threshold) < threshold


def test_learning_period_is_neutral_and_never_flags() -> None:
    threshold = make(**SMALL)
    learning = SMALL["learning_period"]
    results = feed(threshold, calm(WARM, seed=0))  # teaches the residual scale only
    assert threshold.table["lik_count"][0] == 0
    assert threshold.table["lik_res_count"][0] == MIN_RESIDUAL_SAMPLES
    residuals = calm(learning + 1, seed=1)
    residuals[5:learning] = 50.0  # wild, but still learning
    results += feed(threshold, residuals[:-1])
    assert [r.score[0] for r in results] == [0.5] * len(results)
    assert not any(r.anomalous[0] for r in results)
    assert np.isnan(threshold.table["lik_mean"][0])
    assert threshold.table["lik_count"][0] == learning
    # The next reading brings the first estimate and a real likelihood.
    last = feed(threshold, residuals[-1:])[0]
    assert not np.isnan(threshold.table["lik_mean"][0])
    assert last.score[0] != 0.5


def test_calm_noise_flags_almost_nothing() -> None:
    # 4 devices x 5000 readings = 20,000 readings at the default settings. The
    # nominal false-alarm rate is 1 - threshold = 1e-4 per reading (about 2
    # here), and the average of uniform raw scores has a lighter upper tail than
    # the fitted normal; the bound of 0.1% leaves room for early, noisier fits.
    devices, readings = 4, 5000
    threshold = make(capacity=devices)
    rng = np.random.default_rng(2)
    slots = np.arange(devices)
    scored = np.ones(devices, dtype=bool)
    flagged = 0
    for _ in range(readings):
        result = threshold.update(slots, rng.standard_normal((devices, 1)), scored)
        flagged += int(result.anomalous.sum())
        assert ((result.score >= 0.0) & (result.score <= 1.0)).all()
        assert np.isfinite(result.threshold).all()
    assert flagged <= devices * readings // 1000
    # Raw scores of Gaussian noise are Uniform(0, 1): the fitted mean is 1/2 and
    # the std that of a mean of 10 independent uniforms, sqrt(1/120).
    np.testing.assert_allclose(threshold.table["lik_mean"][:devices], 0.5, atol=0.02)
    np.testing.assert_allclose(threshold.table["lik_std"][:devices], np.sqrt(1 / 120), rtol=0.15)


def test_sustained_shift_is_flagged_within_the_short_window() -> None:
    threshold = make()
    feed(threshold, calm(1000, seed=3))
    shifted = calm(30, seed=4) + 5.0
    results = feed(threshold, shifted)
    flags = [bool(r.anomalous[0]) for r in results]
    first = flags.index(True)
    # The short average of raw scores near 1 passes mean + 3.7 std (about
    # 0.84) after 7 readings and reaches 1.0 (5.5 std) after the full window.
    assert first < 10
    red = results[first]
    assert red.score[0] >= 0.9999
    assert red.smoothed[0] >= red.threshold[0]
    assert all(flags[first:])  # stays flagged while the shift lasts


def test_channel_scores_share_the_score_by_each_channels_surprise() -> None:
    threshold = make(channels=3)
    feed(threshold, calm(1000, seed=3, channels=3))
    shifted = calm(30, seed=4, channels=3)
    shifted[:, 1] += 5.0
    flagged = [r for r in feed(threshold, shifted) if r.anomalous[0]]
    assert flagged
    for result in flagged:
        assert result.channel.tolist() == [1]
        assert result.channel_scores[0, 1] == result.score[0] == result.channel_scores[0].max()
    # Calm channels give a fraction of the shifted one's surprise (reading by reading).
    shares = [r.channel_scores[0, 1] / r.channel_scores[0].sum() for r in flagged]
    assert float(np.mean(shares)) > 0.7


def test_channel_weights_are_surprise_relative_to_the_most_surprising_channel() -> None:
    z = np.array([[0.0, 5.0, -2.0], [0.0, 0.0, 0.0], [9.0, 10.0, 1.0]])
    per_channel = erf(np.abs(z) / np.sqrt(2.0))
    weights = channel_weights(per_channel, per_channel.max(axis=1))
    # Surprise -ln(2 * Phi(-|z|)): 14.37 nats at 5, 3.09 at 2.
    np.testing.assert_allclose(weights[0], [0.0, 1.0, 3.09004 / 14.37185], rtol=1e-5)
    assert weights[1].tolist() == [1.0, 1.0, 1.0]  # nothing tells the channels apart
    # Beyond erf's saturation both extremes tie with the worst channel: never above 1.
    assert weights[2, 0] == weights[2, 1] == 1.0 and weights[2, 2] == 0.0


def test_persistent_anomaly_yields_one_red_score_then_suppressed_ones() -> None:
    threshold = make()
    feed(threshold, calm(1000, seed=5))
    burst = feed(threshold, calm(30, seed=6) + 8.0)
    after = feed(threshold, calm(40, seed=7))
    flagged = [i for i, r in enumerate(burst) if r.anomalous[0]]
    assert flagged == list(range(flagged[0], 30))  # one run until the burst ends
    scores = np.array([burst[i].score[0] for i in flagged])
    assert scores[0] >= 0.9999
    assert len(flagged) > 5
    np.testing.assert_array_equal(scores[1:], yellow_level(0.9999))
    assert (scores[1:] < 0.9999).all()
    # The underlying likelihood is still red: the average is above the bound.
    assert all(burst[i].smoothed[0] >= burst[i].threshold[0] for i in flagged)
    # Once the average decays the decision clears and the red state resets.
    assert not after[-1].anomalous[0]
    assert not threshold.table["lik_red"][0]


def test_red_again_after_a_calm_reading_is_reported_red() -> None:
    threshold = make(**SMALL)
    feed(threshold, calm(200, seed=8))
    first = feed(threshold, calm(15, seed=9) + 8.0)
    feed(threshold, calm(40, seed=10))
    second = feed(threshold, calm(15, seed=11) + 8.0)
    for run in (first, second):
        reds = [r.score[0] >= 0.9999 for r in run if r.anomalous[0]]
        assert reds[0] and not any(reds[1:])


def bursts(threshold: AnomalyLikelihood) -> list[list[ThresholdResult]]:
    """Two bursts 55 readings apart (the second starts 40 calm readings after the first ends)."""
    feed(threshold, calm(200, seed=8))
    first = feed(threshold, calm(15, seed=9) + 8.0)
    feed(threshold, calm(40, seed=10))
    second = feed(threshold, calm(15, seed=11) + 8.0)
    return [first, second]


def test_quiet_period_shows_a_red_near_the_last_shown_red_at_yellow_but_keeps_the_flag() -> None:
    loud_threshold = make(**SMALL)
    loud = bursts(loud_threshold)
    quiet_threshold = make(**SMALL, quiet_period=100)
    quiet = bursts(quiet_threshold)
    # Same decisions with and without the quiet period: only scores differ.
    for plain_run, quiet_run in zip(loud, quiet, strict=True):
        assert [bool(r.anomalous[0]) for r in plain_run] == [bool(r.anomalous[0]) for r in quiet_run]
    first, second = quiet
    assert max(r.score[0] for r in first) >= 0.9999  # the first red is shown
    flagged = [r for r in second if r.anomalous[0]]
    assert flagged  # the second burst is still flagged...
    assert all(r.score[0] == yellow_level(0.9999) for r in flagged)  # ...but shown at yellow
    # And it learned exactly what the loud one learned.
    for name in (*HISTORY, *RESIDUAL, "lik_mean", "lik_std"):
        np.testing.assert_array_equal(quiet_threshold.table[name], loud_threshold.table[name], err_msg=name)


def test_quiet_period_ends_after_its_readings() -> None:
    # The second burst's first red comes about 55 raw scores after the first one's.
    first, second = bursts(make(**SMALL, quiet_period=50))
    assert max(r.score[0] for r in first) >= 0.9999
    reds = [r.score[0] >= 0.9999 for r in second if r.anomalous[0]]
    assert reds[0] and not any(reds[1:])


def test_quiet_period_leaves_the_default_state_layout_alone() -> None:
    assert "lik_reported" not in make().table
    assert "lik_reported" in make(quiet_period=5).table


def test_quiet_period_applies_to_likelihood_of_scores() -> None:
    config = LikelihoodConfig(history=500, learning_period=100, reestimation_period=20, quiet_period=200)
    raw = np.random.default_rng(25).random(1300)
    raw[1000:1030] = 1.0
    raw[1100:1130] = 1.0  # a second burst within the quiet period
    score, flags = likelihood_of_scores(raw, config)
    assert flags[1000:1030].any() and flags[1100:1130].any()
    assert (score[1000:1030] >= 0.9999).sum() == 1
    assert not (score[1030:] >= 0.9999).any()
    loud, loud_flags = likelihood_of_scores(raw, msgspec.structs.replace(config, quiet_period=0))
    np.testing.assert_array_equal(flags, loud_flags)
    assert (loud[1100:1130] >= 0.9999).sum() == 1


def test_flagged_readings_do_not_change_the_estimate() -> None:
    threshold = make(**SMALL)
    feed(threshold, calm(200, seed=12))
    before = state(threshold)
    results = feed(threshold, calm(40, seed=13) + 8.0)
    flagged = [i for i, r in enumerate(results) if r.anomalous[0]]
    assert len(flagged) > 30
    start = flagged[0]
    # Replay: from the first flagged reading on, neither the residual scale nor
    # the history (hence any re-estimate) moves.
    replay = make(**SMALL)
    feed(replay, calm(200, seed=12))
    feed(replay, (calm(40, seed=13) + 8.0)[:start])
    frozen = state(replay)
    for name in (*HISTORY, *RESIDUAL):
        np.testing.assert_array_equal(threshold.table[name], frozen[name], err_msg=name)
    assert int(threshold.table["lik_hist_count"][0]) > int(before["lik_hist_count"][0])  # it did learn before
    # Re-estimates during the anomaly (every 7 readings) refit the same history.
    fill = min(int(frozen["lik_hist_count"][0]), SMALL["history"])
    refit = float(frozen["lik_hist_sum"][0]) / fill / QUANTUM
    assert threshold.table["lik_mean"][0] == pytest.approx(refit, rel=1e-12)


def test_onset_caught_within_the_short_window_is_not_learned() -> None:
    threshold = make(**SMALL)
    prefix = calm(200, seed=28)
    shifted = calm(30, seed=29) + 8.0
    feed(threshold, prefix)
    results = feed(threshold, shifted)
    detected = [bool(r.anomalous[0]) for r in results].index(True)
    assert 2 <= detected < SMALL["short_window"]  # some onset readings went unflagged
    # Same state as if the onset had been zeros: learning lags the readings by
    # short_window - 1, and the flag came before any onset reading was learned.
    replay = make(**SMALL)
    feed(replay, prefix)
    feed(replay, np.zeros((detected, 1)))
    for name in (*HISTORY, *RESIDUAL):
        np.testing.assert_array_equal(threshold.table[name], replay.table[name], err_msg=name)


def test_averages_with_flagged_readings_stay_out_of_the_history() -> None:
    threshold = make(**SMALL)
    feed(threshold, calm(200, seed=14))
    feed(threshold, calm(20, seed=15) + 8.0)
    kept = int(threshold.table["lik_hist_count"][0])
    clean: list[tuple[bool, int, float]] = []
    for residual in calm(30, seed=16):
        result = feed(threshold, residual[None, :])[0]
        clean.append((bool(result.anomalous[0]), int(threshold.table["lik_hist_count"][0]),
                      float(result.smoothed[0])))
    last_flag = max(i for i, (flag, *_) in enumerate(clean) if flag)
    # The first average kept is the first whose window follows the last flag,
    # once short_window - 1 more unflagged readings have confirmed it.
    window = SMALL["short_window"]
    first_kept = last_flag + 2 * window - 1
    assert [count for _, count, _ in clean[:first_kept]] == [kept] * first_kept
    assert clean[first_kept][1] == kept + 1
    position = kept % SMALL["history"]
    assert threshold.table["lik_hist"][0, position] == round(clean[last_flag + window][2] * QUANTUM)


def test_nan_rows_leave_state_untouched() -> None:
    threshold = make(capacity=2, **SMALL)
    feed(threshold, calm(100, seed=17), slot=0)
    before = state(threshold)
    result = threshold.update(np.array([0, 1]), np.array([[np.nan], [np.nan]]), np.array([True, True]))
    assert result.anomalous.tolist() == [False, False]
    assert result.score.tolist() == [0.5, 0.5]
    for name, values in before.items():
        np.testing.assert_array_equal(threshold.table[name], values, err_msg=name)


def test_unscored_rows_are_never_flagged_and_teach_nothing() -> None:
    threshold = make(**SMALL)
    feed(threshold, calm(200, seed=18))
    before = state(threshold)
    results = feed(threshold, np.full(20, 50.0), scored=False)
    assert not any(r.anomalous[0] for r in results)
    assert all(r.score[0] == 0.5 for r in results)
    for name, values in before.items():
        np.testing.assert_array_equal(threshold.table[name], values, err_msg=name)


def test_reestimation_every_period() -> None:
    threshold = make(**SMALL)
    learning, period = SMALL["learning_period"], SMALL["reestimation_period"]
    feed(threshold, calm(WARM, seed=19))  # teaches the residual scale only
    assert threshold.table["lik_count"][0] == 0
    changed_at, previous = [], np.nan
    table = threshold.table
    for residual in calm(120, seed=20):
        # The fit uses the averages kept before the reading.
        fill = min(int(table["lik_hist_count"][0]), SMALL["history"])
        kept = table["lik_hist"][0, :fill] / QUANTUM
        feed(threshold, residual[None, :])
        count, mean = int(table["lik_count"][0]), float(table["lik_mean"][0])
        if not (np.isnan(mean) and np.isnan(previous)) and mean != previous:
            changed_at.append(count)
            assert table["lik_since"][0] == 0
            assert mean == pytest.approx(kept.mean(), rel=1e-9)
            assert table["lik_std"][0] == pytest.approx(max(kept.std(), 1e-4), rel=1e-6)
        previous = mean
    assert changed_at == list(range(learning + 1, 121, period))


def test_running_sums_follow_the_history_ring_after_wrapping() -> None:
    threshold = make(**SMALL)
    feed(threshold, calm(600, seed=21))
    table = threshold.table
    assert table["lik_hist_count"][0] > 3 * SMALL["history"]
    ring = table["lik_hist"][0].astype(np.int64)
    assert table["lik_hist_sum"][0] == ring.sum()  # integer sums: exact
    assert table["lik_hist_sumsq"][0] == (ring * ring).sum()


def test_devices_are_independent_of_each_other() -> None:
    rng = np.random.default_rng(22)
    devices, readings, channels = 3, 260, 2
    streams = rng.standard_normal((devices, readings, channels))
    streams[0, 150:170] += 9.0  # device 0 gets an anomaly
    streams[1, ::17] = np.nan  # device 1 has readings without a forecast
    scored = rng.random((devices, readings)) > 0.02
    # Rounds of distinct devices in random order; devices start at different times.
    together = make(channels, capacity=2, **SMALL)  # grows as slots appear
    seen = np.zeros(devices, dtype=int)
    joint: list[list[tuple[float, bool, int, float, float]]] = [[] for _ in range(devices)]
    while (seen < readings).any():
        ready = [d for d in range(devices) if seen[d] < readings and (d == 0 or seen[0] > 40 * d)]
        picked = rng.permutation(ready)[: rng.integers(1, len(ready) + 1)]
        together.table.grow(int(picked.max()) + 1)
        rows = np.array([streams[d, seen[d]] for d in picked])
        result = together.update(picked.astype(np.intp), rows, np.array([scored[d, seen[d]] for d in picked]))
        for k, d in enumerate(picked):
            joint[d].append((result.score[k], bool(result.anomalous[k]), int(result.channel[k]),
                             result.smoothed[k], result.threshold[k]))
        seen[picked] += 1
    assert any(flag for _, flag, *_ in joint[0])
    for d in range(devices):
        alone = make(channels, capacity=1, **SMALL)
        results = [alone.update(np.array([0]), streams[d, i][None, :], scored[d, i: i + 1])
                   for i in range(readings)]
        expected = np.array([(r.score[0], r.anomalous[0], r.channel[0], r.smoothed[0], r.threshold[0])
                             for r in results])
        np.testing.assert_allclose(np.array(joint[d], dtype=np.float64), expected, rtol=1e-12, atol=0)
        for name in alone.table.fields:
            np.testing.assert_allclose(together.table[name][d], alone.table[name][0], rtol=1e-12,
                                       err_msg=f"device {d}: {name}")


def test_new_slots_after_growth_start_fresh() -> None:
    threshold = make(capacity=1, **SMALL)
    feed(threshold, calm(100, seed=23))
    threshold.table.grow(3)
    result = threshold.update(np.array([2, 0]), np.array([[100.0], [0.1]]), np.array([True, True]))
    assert result.score[0] == 0.5 and not result.anomalous[0]
    assert threshold.table["lik_res_seen"][2] == 1
    assert np.isnan(threshold.table["lik_mean"][2])
    assert threshold.table["lik_count"][0] > 0


def test_bound_is_where_the_likelihood_reaches_the_threshold() -> None:
    threshold = make(**SMALL)
    results = feed(threshold, calm(150, seed=24))
    table = threshold.table
    expected = table["lik_mean"][0] + table["lik_std"][0] * ndtri(0.9999)
    assert results[-1].threshold[0] == pytest.approx(expected, rel=1e-12)
    assert results[0].threshold[0] == 1.0  # no estimate yet


def test_likelihood_of_scores_calibrates_a_raw_stream() -> None:
    config = LikelihoodConfig(history=500, learning_period=100, reestimation_period=20)
    raw = np.random.default_rng(25).random(1200)
    raw[1000:1030] = 1.0
    score, flags = likelihood_of_scores(raw, config)
    assert (score[:100] == 0.5).all() and score[100] != 0.5
    assert flags[:1000].sum() <= 5  # a fit on a short history is noisy; 1e-4 is nominal
    run = np.flatnonzero(flags[1000:]) + 1000
    # Ten raw scores of 1 lift the average from about 0.5 to 1, 5.5 std.
    assert run.size > 0 and run[0] < 1010
    assert score[run[0]] >= 0.9999
    assert (score[run[1:]] == yellow_level(0.9999)).all()
    # NaN entries are skipped, not counted.
    gapped = np.insert(raw, [50, 120], np.nan)
    gapped_score, gapped_flags = likelihood_of_scores(gapped, config)
    assert gapped_score[50] == 0.5 and gapped_score[121] == 0.5
    np.testing.assert_array_equal(np.delete(gapped_score, [50, 121]), score)
    np.testing.assert_array_equal(np.delete(gapped_flags, [50, 121]), flags)


# ---- determinism (the shared contracts: tests/streamer/thresholds/test_contracts.py) ----


def test_deterministic_for_same_inputs() -> None:
    residuals = np.random.default_rng(26).standard_normal((250, 2, 1))
    residuals[150:170, 0, 0] += 10.0
    runs = []
    for _ in range(2):
        threshold = make(capacity=2, **SMALL)
        results = [threshold.update(np.array([0, 1]), r, np.array([True, True])) for r in residuals]
        runs.append((np.array([r.score for r in results]), np.array([r.anomalous for r in results]),
                     state(threshold)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert runs[0][1].any()
    for name, values in runs[0][2].items():
        np.testing.assert_array_equal(values, runs[1][2][name], err_msg=name)


def test_state_is_picklable() -> None:
    threshold = make(**SMALL)
    feed(threshold, calm(100, seed=27))
    clone = pickle.loads(pickle.dumps(threshold))  # noqa: S301  # our own object
    args = np.array([0]), np.array([[3.0]]), np.array([True])
    assert clone.update(*args).score.tolist() == threshold.update(*args).score.tolist()
    assert clone.method == "likelihood"


def test_exponential_estimator_keeps_o1_state_and_matches_the_window_on_stationary_noise() -> None:
    window, exponential = make(**SMALL), make(estimator="exponential", **SMALL)
    assert "lik_hist" not in exponential.table and "lik_hist" in window.table
    noise = calm(600, seed=21)
    feed(window, noise)
    feed(exponential, noise)
    # Both fit the same stream of short averages; only the weighting differs.
    assert exponential.table["lik_hist_count"][0] == window.table["lik_hist_count"][0]
    assert exponential.table["lik_mean"][0] == pytest.approx(window.table["lik_mean"][0], abs=0.03)
    assert exponential.table["lik_std"][0] == pytest.approx(window.table["lik_std"][0], rel=0.35)


def test_exponential_estimator_weights_recent_averages_more() -> None:
    # The first averages are plain sample statistics, then the span takes over.
    threshold = make(estimator="exponential", **SMALL)
    stage = threshold.stage
    rows = np.array([0])
    for kept, value in enumerate((0.2, 0.4)):
        stage._learn_exponential(rows, np.array([value]), np.array([kept]))
    assert threshold.table["lik_ew_mean"][0] == pytest.approx(0.3)
    assert threshold.table["lik_ew_var"][0] == pytest.approx(0.01)
    for kept in range(2, 400):
        stage._learn_exponential(rows, np.array([0.9]), np.array([kept]))
    # A window mean would still hold the early values until they leave it.
    assert threshold.table["lik_ew_mean"][0] == pytest.approx(0.9, abs=1e-3)


PATTERN: dict[str, Any] = {**SMALL, "source": "pattern", "pattern_buckets": 4, "pattern_order": 2,
                           "pattern_learning": 12}


def feed_values(threshold: AnomalyLikelihood, values: Array, residual: float = 0.0) -> list[ThresholdResult]:
    slots = np.array([0])
    flags = np.array([True])
    return [threshold.update(slots, np.array([[residual]]), flags, np.array([[v]])) for v in values]


def noisy_cycle(n: int, seed: int) -> Array:
    rng = np.random.default_rng(seed)
    base = np.tile(np.array([0.0, 1.0, 2.0, 3.0, 2.0, 1.0]), n // 6 + 1)[:n]
    return base + rng.uniform(-0.1, 0.1, n)  # never crosses a level boundary


def test_pattern_source_needs_the_readings() -> None:
    threshold = make(**PATTERN)
    with pytest.raises(ValueError, match="readings"):
        threshold.update(np.array([0]), np.array([[0.0]]), np.array([True]))


def test_pattern_source_flags_a_broken_cycle_inside_the_range() -> None:
    threshold = make(**PATTERN)
    calm_results = feed_values(threshold, noisy_cycle(600, 0))
    assert not any(bool(r.anomalous[0]) for r in calm_results[300:])
    # The cycle stops at a level it only ever passed through: every value is in range.
    broken = feed_values(threshold, np.full(12, 1.0) + np.random.default_rng(1).uniform(-0.1, 0.1, 12))
    assert any(bool(r.anomalous[0]) for r in broken)


def test_pattern_source_ignores_the_residual() -> None:
    values = noisy_cycle(400, 2)
    quiet = [r.score[0] for r in feed_values(make(**PATTERN), values, residual=0.0)]
    loud = [r.score[0] for r in feed_values(make(**PATTERN), values, residual=1e6)]
    np.testing.assert_array_equal(quiet, loud)


def test_pattern_context_is_passed_to_the_pattern_and_off_by_default() -> None:
    plain = make(**PATTERN)
    assert plain.pattern is not None and plain.pattern.context_span is None
    assert "pat_context" not in plain.table
    threshold = make(**PATTERN, pattern_context_span=20, pattern_context_buckets=3)
    assert threshold.pattern is not None
    assert (threshold.pattern.context_span, threshold.pattern.context_buckets) == (20, 3)
    # The context multiplies the codes: (4 + 2) ** 2 pairs times 3 + 2 context levels.
    assert threshold.table["pat_seen"].shape[-1] == 36 * 5
    # A calm cycle stays calm with the context too.
    results = feed_values(threshold, noisy_cycle(600, 3))
    assert not any(bool(r.anomalous[0]) for r in results[300:])
