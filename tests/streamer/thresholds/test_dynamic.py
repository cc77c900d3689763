import pickle
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from streamer.config import DynamicThresholdConfig, ThresholdsConfig
from streamer.state.slot_table import SlotTable
from streamer.thresholds import make_threshold
from streamer.thresholds.dynamic import DynamicThreshold, grid_rank, side_scores, z_grid
from streamer.thresholds.dynamic_reference import ReferenceRun, run_reference

FloatArray = npt.NDArray[np.float64]
STATE = ("dyn_smoothed", "dyn_count", "dyn_history", "dyn_mu", "dyn_sigma", "dyn_epsilon", "dyn_cut",
         "dyn_peak", "dyn_since")
SMALL = DynamicThresholdConfig(window=300, smoothing_span=10, error_buffer=10, min_history=50,
                               decision_interval=7)


def make(dynamic: DynamicThresholdConfig = SMALL, channels: int = 1, capacity: int = 4) -> DynamicThreshold:
    config = ThresholdsConfig(method="dynamic", dynamic=dynamic)
    return DynamicThreshold(SlotTable(capacity), channels, config)


def feed(threshold: DynamicThreshold, residuals: FloatArray, slot: int = 0,
         scored: bool = True) -> list[bool]:
    slots, flags = np.array([slot]), np.array([scored])
    return [bool(threshold.update(slots, np.atleast_1d(r).reshape(1, -1), flags).anomalous[0])
            for r in residuals]


def synthetic(rng: np.random.Generator, length: int, channels: int) -> FloatArray:
    """Noise with spikes, level shifts and drops (the low side's case) on random channels."""
    residual = rng.standard_normal((length, channels))
    for _ in range(2):
        at, channel = int(rng.integers(0, length - 40)), int(rng.integers(channels))
        residual[at:at + int(rng.integers(1, 20)), channel] *= rng.uniform(3.0, 6.0)
    for scale, offset in ((1.0, 2.0), (0.03, 0.0), (0.03, 0.0)):
        at, channel = int(rng.integers(0, length - 70)), int(rng.integers(channels))
        residual[at:at + 60, channel] = residual[at:at + 60, channel] * scale + offset
    return residual


@dataclass
class StreamRun:
    anomalous: list[FloatArray]
    score: list[FloatArray]
    scored: list[npt.NDArray[np.bool_]]
    state: list[dict[str, FloatArray]]  # per device, (readings, *field shape)


def stream(dynamic: DynamicThresholdConfig, data: list[FloatArray], begin: list[int],
           warmup: int = 20) -> StreamRun:
    """Devices of different lengths, joining at different rounds, one round at a time.

    The table starts with room for one device, so it grows as devices join.
    """
    channels = data[0].shape[1]
    threshold = make(dynamic, channels=channels, capacity=1)
    run = StreamRun([np.zeros(len(d), dtype=bool) for d in data], [np.zeros(len(d)) for d in data],
                    [np.arange(len(d)) >= warmup for d in data], [])
    fields = ("dyn_mu", "dyn_sigma", "dyn_epsilon", "dyn_cut")
    run.state = [{name: np.zeros((len(d), *threshold.table[name].shape[1:])) for name in fields}
                 for d in data]
    spans = [(b, b + len(d)) for b, d in zip(begin, data, strict=True)]
    for t in range(max(end for _, end in spans)):
        devices = np.array([i for i, (b, end) in enumerate(spans) if b <= t < end])
        if devices.size == 0:
            continue
        threshold.table.grow(int(devices.max()) + 1)
        readings = [t - begin[i] for i in devices]
        residual = np.array([data[i][k] for i, k in zip(devices, readings, strict=True)])
        scored = np.array([run.scored[i][k] for i, k in zip(devices, readings, strict=True)])
        result = threshold.update(devices, residual, scored)
        for row, (i, k) in enumerate(zip(devices, readings, strict=True)):
            run.anomalous[i][k] = result.anomalous[row]
            run.score[i][k] = result.score[row]
            for name in fields:
                run.state[i][name][k] = threshold.table[name][i]
    return run


def compare(dynamic: DynamicThresholdConfig, data: list[FloatArray], run: StreamRun) -> list[ReferenceRun]:
    """Assert the stream made the reference's decisions; returns the reference runs."""
    references = []
    for i, residual in enumerate(data):
        per_channel = [run_reference(residual[:, c], dynamic) for c in range(residual.shape[1])]
        references.extend(per_channel)
        flagged = np.any([r.flagged for r in per_channel], axis=0)
        score = np.max([r.score for r in per_channel], axis=0)
        np.testing.assert_array_equal(run.anomalous[i], flagged & run.scored[i], err_msg=f"device {i}")
        np.testing.assert_allclose(run.score[i], np.where(run.scored[i], score, 0.0), rtol=1e-9, atol=1e-12)
        for c, ref in enumerate(per_channel):
            known = ~np.isnan(ref.mu)
            state = run.state[i]
            np.testing.assert_allclose(state["dyn_mu"][known, c], ref.mu[known], rtol=1e-9)
            np.testing.assert_allclose(state["dyn_sigma"][known, c], ref.sigma[known], rtol=1e-9)
            np.testing.assert_allclose(state["dyn_epsilon"][known, c], ref.epsilon[known], rtol=1e-9)
            np.testing.assert_allclose(state["dyn_cut"][known, c], ref.cut[known], rtol=1e-9)
            first = int(np.argmax(known))
            assert np.isinf(state["dyn_epsilon"][:first, c]).all()  # nothing decided before
    return references


@pytest.mark.parametrize(("interval", "buffer"), [(1, 10), (7, 10), (70, 10), (7, 100)])
def test_stream_matches_reference(interval: int, buffer: int) -> None:
    dynamic = DynamicThresholdConfig(window=300, smoothing_span=10, error_buffer=buffer, min_history=50,
                                     decision_interval=interval)
    rng = np.random.default_rng(interval + buffer)
    data = [synthetic(rng, length, channels=2) for length in (620, 450, 800)]
    for residual in data:
        residual[rng.choice(len(residual), 8, replace=False)] = np.nan  # no forecast: skipped
    run = stream(dynamic, data, begin=[0, 35, 110])
    references = compare(dynamic, data, run)
    # The data exercise both sides, the flags and their absence.
    assert any(r.flagged_sides[:, 0].any() for r in references)
    assert any(r.flagged_sides[:, 1].any() for r in references)
    assert any(a.any() for a in run.anomalous)
    assert not all(a[s].all() for a, s in zip(run.anomalous, run.scored, strict=True))


def test_stream_matches_reference_with_published_defaults() -> None:
    dynamic = DynamicThresholdConfig()
    rng = np.random.default_rng(42)
    data = [synthetic(rng, 5000, channels=1), synthetic(rng, 2600, channels=1)]
    run = stream(dynamic, data, begin=[0, 1500], warmup=40)
    references = compare(dynamic, data, run)
    assert any(r.flagged.any() for r in references)
    assert sum(int(r.evaluated.sum()) for r in references) == (5000 - 100) // 70 + 1 + (2600 - 100) // 70 + 1


def test_stream_matches_reference_without_the_inverted_search() -> None:
    dynamic = DynamicThresholdConfig(window=200, smoothing_span=5, error_buffer=3, min_history=30,
                                     decision_interval=3, inverted=False, prune_p=0.05)
    rng = np.random.default_rng(9)
    data = [synthetic(rng, 500, channels=3)]
    run = stream(dynamic, data, begin=[0])
    references = compare(dynamic, data, run)
    assert all(r.flagged_sides.shape[1] == 1 for r in references)
    assert run.anomalous[0].any()


def test_spike_after_calm_noise_is_flagged_at_once() -> None:
    threshold = make(DynamicThresholdConfig(decision_interval=70))
    rng = np.random.default_rng(5)
    calm = feed(threshold, 0.1 * rng.standard_normal(1000))
    assert not any(calm)
    spike = threshold.update(np.array([0]), np.array([[40.0]]), np.array([True]))
    # Judged against the stored threshold, without waiting for the next evaluation.
    assert (threshold.table["dyn_count"][0] - 100) % 70 != 0
    assert spike.anomalous.tolist() == [True]
    assert spike.score[0] >= 0.5
    assert spike.smoothed[0] > spike.threshold[0]


def test_channel_scores_name_the_channel_that_spiked() -> None:
    threshold = make(DynamicThresholdConfig(decision_interval=70), channels=3)
    rng = np.random.default_rng(6)
    for row in 0.1 * rng.standard_normal((1000, 3)):
        threshold.update(np.array([0]), row.reshape(1, 3), np.array([True]))
    spike = threshold.update(np.array([0]), np.array([[0.05, 0.1, 40.0]]), np.array([True]))
    assert spike.anomalous.tolist() == [True] and spike.channel.tolist() == [2]
    scores = spike.channel_scores[0]
    assert scores[2] == spike.score[0] >= 0.5
    assert scores[0] < 0.5 and scores[1] < 0.5  # calm channels, each scored on its own


def test_calm_noise_is_rarely_flagged_with_the_published_defaults() -> None:
    devices = 20
    threshold = make(DynamicThresholdConfig(), capacity=devices)
    residual = np.random.default_rng(6).standard_normal((3000, devices, 1))
    flags = np.array([threshold.update(np.arange(devices), r, np.ones(devices, dtype=bool)).anomalous
                      for r in residual])
    assert flags.mean() < 1e-3
    assert flags.sum(axis=0).tolist().count(0) >= devices - 2


def test_warmup_rows_are_never_flagged_but_enter_the_history() -> None:
    threshold = make(capacity=2)
    rng = np.random.default_rng(7)
    residual = np.repeat(0.1 * rng.standard_normal((400, 1, 1)), 2, axis=1)  # twin devices
    residual[200:230] = 50.0
    scored = np.array([True, False])
    results = [threshold.update(np.arange(2), r, scored) for r in residual]
    assert any(r.anomalous[0] for r in results[200:230])  # the scored twin is flagged
    assert not any(r.anomalous[1] for r in results)
    assert all(r.score[1] == 0.0 for r in results)
    for name in STATE:
        np.testing.assert_array_equal(threshold.table[name][0], threshold.table[name][1], err_msg=name)


def test_nothing_is_decided_before_min_history() -> None:
    threshold = make()
    residual = np.concatenate([0.1 * np.ones(SMALL.min_history - 2), [100.0]])
    flags = feed(threshold, residual)
    assert not any(flags)
    assert np.isnan(threshold.table["dyn_mu"][0]).all()
    # The next reading is the first evaluation point, judged by the fresh threshold.
    assert feed(threshold, np.array([100.0])) == [True]


def test_nan_residual_rows_are_skipped() -> None:
    threshold = make(capacity=2)
    feed(threshold, 0.1 * np.random.default_rng(8).standard_normal(120), slot=0)
    before = {name: threshold.table[name].copy() for name in STATE}
    result = threshold.update(np.array([0, 1]), np.array([[np.nan], [np.inf]]), np.array([True, True]))
    assert result.anomalous.tolist() == [False, False]
    assert result.score.tolist() == [0.0, 0.0]
    for name in STATE:
        np.testing.assert_array_equal(threshold.table[name], before[name], err_msg=name)


def test_scores_are_at_least_half_exactly_when_flagged() -> None:
    threshold = make(channels=2, capacity=6)
    rng = np.random.default_rng(10)
    seen = []
    for t in range(700):
        residual = rng.standard_normal((6, 2)) * np.where(rng.random((6, 2)) < 0.01, 30.0, 1.0)
        if 400 <= t < 500:
            residual[:3] *= 0.01
        result = threshold.update(np.arange(6), residual, np.ones(6, dtype=bool))
        assert ((result.score >= 0.0) & (result.score <= 1.0)).all()
        np.testing.assert_array_equal(result.score >= 0.5, result.anomalous)
        seen.extend(result.anomalous.tolist())
    assert any(seen)
    assert not all(seen)


@pytest.mark.parametrize("inverted", [True, False])
def test_drop_is_caught_by_the_inverted_search_only(inverted: bool) -> None:
    threshold = make(DynamicThresholdConfig(window=600, smoothing_span=10, error_buffer=5, min_history=100,
                                            decision_interval=5, inverted=inverted))
    rng = np.random.default_rng(11)
    residual = rng.standard_normal(900)
    residual[700:800] *= 0.01
    results = [threshold.update(np.array([0]), np.array([[r]]), np.array([True])) for r in residual]
    in_drop = [r for r in results[700:820] if r.anomalous[0]]
    assert bool(in_drop) == inverted
    assert all(r.smoothed[0] < r.threshold[0] for r in in_drop)  # below the lower bound


def test_grid_and_scores() -> None:
    assert z_grid(2.5, 11.5, 0.5).tolist() == [2.5 + 0.5 * g for g in range(19)]
    assert z_grid(1.0, 1.0, 0.5).tolist() == [1.0]
    value = np.array([5.0, 5.0, 1.0])
    scores = side_scores(value, np.array([True, False, False]), np.array(1.0), np.array(0.0), np.array(1.0))
    assert scores[0] == 1.0  # flagged with no spread
    assert scores[1] < 0.5  # pruned: above epsilon yet not flagged
    assert scores[2] == 0.0


@settings(max_examples=200, deadline=None)
@given(
    values=arrays(np.float64, (3, 12), elements=st.floats(-5, 5, allow_nan=False)),
    mu=st.floats(-2, 2),
    sigma=st.sampled_from([0.0, 1e-12, 0.1, 1.0, 3.0]),
    count=st.integers(1, 25),
)
def test_grid_rank_matches_brute_force(values: FloatArray, mu: float, sigma: float, count: int) -> None:
    grid = z_grid(0.5, 0.5 + 0.25 * (count - 1), 0.25)
    epsilon = np.tile(mu + grid * sigma, (3, 1))
    values = values.copy()
    ties = min(4, len(grid))
    values[0, :ties] = epsilon[0, :ties]  # exact ties with candidates
    values[2, -3:] = -np.inf  # padding
    brute = (epsilon[:, None, :] < values[:, :, None]).sum(axis=2)
    np.testing.assert_array_equal(grid_rank(values, epsilon), brute)


def test_factory_builds_it() -> None:
    threshold = make_threshold(SlotTable(2), 3, ThresholdsConfig(method="dynamic"))
    assert isinstance(threshold, DynamicThreshold)
    assert threshold.method == "dynamic"


# ---- determinism (the shared contracts: tests/streamer/thresholds/test_contracts.py) ----


def test_deterministic_and_picklable() -> None:
    rng = np.random.default_rng(12)
    residual = rng.standard_normal((300, 2, 1))
    residual[250:255, 0] = 30.0
    runs = []
    for _ in range(2):
        threshold = make(capacity=2)
        flags = [threshold.update(np.arange(2), r, np.ones(2, dtype=bool)).anomalous for r in residual]
        runs.append((np.array(flags), threshold))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][0].any()
    clone = pickle.loads(pickle.dumps(runs[0][1]))  # noqa: S301  # our own object
    args = np.arange(2), np.array([[0.3], [25.0]]), np.ones(2, dtype=bool)
    expected = runs[0][1].update(*args)
    got = clone.update(*args)
    np.testing.assert_array_equal(got.score, expected.score)
    np.testing.assert_array_equal(got.anomalous, expected.anomalous)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    window=st.integers(20, 120),
    interval=st.integers(1, 12),
    buffer=st.integers(0, 15),
    span=st.sampled_from([1.0, 3.0, 20.0]),
    prune_p=st.sampled_from([0.0, 0.13, 0.5]),
    inverted=st.booleans(),
)
def test_stream_matches_reference_for_any_settings(
    seed: int, window: int, interval: int, buffer: int, span: float, prune_p: float, inverted: bool
) -> None:
    dynamic = DynamicThresholdConfig(window=window, decision_interval=interval, error_buffer=buffer,
                                     smoothing_span=span, prune_p=prune_p, inverted=inverted,
                                     min_history=min(window, 15), z_min=1.5, z_max=6.0, max_sequences=3)
    rng = np.random.default_rng(seed)
    data = [synthetic(rng, length, channels=2) for length in (150, 90)]
    compare(dynamic, data, stream(dynamic, data, begin=[0, 40], warmup=5))
