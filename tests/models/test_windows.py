"""Training sequences: causal inputs and targets, the time split, loss weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from models.normalization import NormalizationSpec, normalize_series
from models.windows import make_sequences, next_step_pairs, normalize_many, split_point, step_weights

SPEC = NormalizationSpec(span=32.0)


def _series(steps: int, channels: int = 2, seed: int = 0) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None]
    return 50.0 + 5.0 * np.sin(t / 7.0 + np.arange(channels)) + rng.normal(0.0, 0.5, (steps, channels))


def test_vectorised_normalisation_equals_the_daemons_rule_for_every_length() -> None:
    series = [_series(n, seed=n) for n in (40, 3, 120, 1)]
    for values, (u, mean, std) in zip(series, normalize_many(SPEC, series), strict=True):
        expected = normalize_series(SPEC, values)
        np.testing.assert_array_equal(u, expected[0])
        np.testing.assert_array_equal(mean, expected[1])
        np.testing.assert_array_equal(std, expected[2])


def test_target_is_the_next_reading_in_the_current_units() -> None:
    values = _series(30)
    u, mean, std = normalize_series(SPEC, values)
    inputs, targets = next_step_pairs(SPEC, values, (u, mean, std))
    assert inputs.shape == targets.shape == (29, 2)
    np.testing.assert_allclose(targets[10], (values[11] - mean[10]) / std[10])
    np.testing.assert_array_equal(inputs, u[:-1])


def test_changing_a_future_reading_changes_nothing_earlier() -> None:
    values = _series(80)
    k = 50
    later = values.copy()
    later[k] += 40.0
    inputs, targets = next_step_pairs(SPEC, values, normalize_series(SPEC, values))
    inputs2, targets2 = next_step_pairs(SPEC, later, normalize_series(SPEC, later))
    np.testing.assert_array_equal(inputs2[:k], inputs[:k])
    np.testing.assert_array_equal(targets2[: k - 1], targets[: k - 1])
    # The change does reach the pair whose target it is, and every input from k on.
    assert not np.array_equal(targets2[k - 1], targets[k - 1])
    assert not np.array_equal(inputs2[k], inputs[k])


def test_sequences_are_causal_too() -> None:
    values = _series(200)
    later = values.copy()
    later[150:] *= 3.0
    kwargs: dict[str, Any] = {"window": 16, "min_context": 4, "stride": 1, "val_fraction": 0.0}
    before = make_sequences({"d": values}, SPEC, **kwargs).train
    after = make_sequences({"d": later}, SPEC, **kwargs).train
    # Sequence i covers pairs i .. i+15; its last target is reading i+16.
    untouched = 150 - 16
    np.testing.assert_array_equal(after.inputs[:untouched], before.inputs[:untouched])
    np.testing.assert_array_equal(after.targets[:untouched], before.targets[:untouched])
    assert not np.array_equal(after.targets[untouched], before.targets[untouched])


def test_validation_readings_never_reach_training_and_the_split_is_tight() -> None:
    steps, val_fraction = 400, 0.25
    values = _series(steps)
    split = split_point(steps, val_fraction)
    # Stride 1: the last training window ends exactly at the split.
    kwargs: dict[str, Any] = {"window": 16, "min_context": 4, "stride": 1, "val_fraction": val_fraction}
    base = make_sequences({"d": values}, SPEC, **kwargs)

    future = values.copy()
    future[split:] += 100.0  # every validation reading
    changed = make_sequences({"d": future}, SPEC, **kwargs)
    np.testing.assert_array_equal(changed.train.inputs, base.train.inputs)
    np.testing.assert_array_equal(changed.train.targets, base.train.targets)
    assert not np.array_equal(changed.validation.inputs, base.validation.inputs)

    last_train = values.copy()
    last_train[split - 1] += 100.0  # the last training reading is a training target
    assert not np.array_equal(make_sequences({"d": last_train}, SPEC, **kwargs).train.targets,
                              base.train.targets)


def test_validation_starts_at_the_split_with_the_history_before_it() -> None:
    steps = 300
    values = _series(steps)
    split = split_point(steps, 0.2)
    sequences = make_sequences({"d": values}, SPEC, window=10, min_context=2, stride=10, val_fraction=0.2)
    u, _, _ = normalize_series(SPEC, values)
    np.testing.assert_array_equal(sequences.validation.inputs[0], u[split:split + 10].astype(np.float32))
    # Pairs [0, split-1) train and [split, steps-1) validate, in whole windows.
    assert len(sequences.train) == (split - 1 - 10) // 10 + 1
    assert len(sequences.validation) == (steps - 1 - split - 10) // 10 + 1


def test_each_device_is_split_on_its_own_timeline() -> None:
    series = {"long": _series(400, seed=1), "short": _series(60, seed=2)}
    sequences = make_sequences(series, SPEC, window=20, min_context=5, stride=20, val_fraction=0.5)
    # long: train pairs [0,199) -> 9 windows, validation [200,399) -> 9; short: [0,29) -> 1, [30,59) -> 1.
    assert len(sequences.train) == 10
    assert len(sequences.validation) == 10


def test_sample_weights_cover_steps_with_min_context_readings() -> None:
    sequences = make_sequences({"d": _series(100)}, SPEC, window=12, min_context=5, val_fraction=0.2)
    weights = sequences.train.weights
    assert weights.shape == (len(sequences.train), 12)
    np.testing.assert_array_equal(weights[:, :4], 0.0)
    np.testing.assert_array_equal(weights[:, 4:], 1.0)
    np.testing.assert_array_equal(step_weights(3, 1), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="min_context"):
        step_weights(4, 5)


def test_outliers_are_clipped_in_inputs_and_targets() -> None:
    values = _series(100, channels=1)
    values[60] = 1e9
    sequences = make_sequences({"d": values}, SPEC, window=16, min_context=4, stride=1, val_fraction=0.0)
    # The outlier is a target before it is an input; as an input it is
    # already part of its own statistics, so only the target needs the clip.
    assert np.abs(sequences.train.targets).max() == pytest.approx(SPEC.clip)
    assert np.abs(sequences.train.inputs).max() <= SPEC.clip


def test_sampling_is_seeded_and_bounded() -> None:
    train = make_sequences({"d": _series(500)}, SPEC, window=8, min_context=2, stride=1).train
    a = train.sample(50, np.random.default_rng(3))
    b = train.sample(50, np.random.default_rng(3))
    assert len(a) == 50
    np.testing.assert_array_equal(a.inputs, b.inputs)
    assert train.sample(None, np.random.default_rng(3)) is train


def test_series_shorter_than_a_window_fail_clearly() -> None:
    with pytest.raises(ValueError, match="enough readings"):
        make_sequences({"d": _series(10)}, SPEC, window=16, min_context=4)
