"""Held-out scoring of a forecaster with the numpy step (retraining's comparison)."""

from __future__ import annotations

import numpy as np
import pytest

from models.bundle import load_bundle
from models.evaluation import HeldOut, holdout_mse, holdout_sequences, sequence_forecasts
from models.normalization import NormalizationSpec
from models.weights import forecast_windows
from models.windows import make_sequences


def test_the_forecast_at_each_step_equals_window_mode_over_the_prefix() -> None:
    bundle = load_bundle("default")
    inputs = np.random.default_rng(1).standard_normal((5, 12, 1)).astype(np.float32)
    stepped = sequence_forecasts(bundle.weights, inputs)
    for t in (0, 5, 11):
        np.testing.assert_allclose(stepped[:, t], forecast_windows(bundle.weights, inputs[:, : t + 1]),
                                   rtol=1e-5, atol=1e-6)


def test_holdout_windows_equal_the_validation_windows_of_training() -> None:
    # Same cut, same arithmetic: held-out windows are training's validation windows.
    series = np.cumsum(np.random.default_rng(2).standard_normal((200, 1)), axis=0)
    spec = NormalizationSpec()
    split = make_sequences({"d": series}, spec, window=16, min_context=4, stride=4, val_fraction=0.25)
    held = holdout_sequences([HeldOut(series, 150)], spec, window=16, min_context=4, stride=4)
    np.testing.assert_array_equal(held.inputs, split.validation.inputs)
    np.testing.assert_array_equal(held.targets, split.validation.targets)
    np.testing.assert_array_equal(held.weights, split.validation.weights)


def test_holdout_mse_ranks_a_forecaster_that_knows_the_signal_above_one_that_does_not() -> None:
    bundle = load_bundle("default")
    rng = np.random.default_rng(3)
    t = np.arange(600)
    smooth = (100 + 5 * np.sin(2 * np.pi * t / 200))[:, None] + 0.1 * rng.standard_normal((600, 1))
    held = [HeldOut(smooth, 400)]
    trained = holdout_mse(bundle.metadata, bundle.weights, held)
    # The same network with every weight zeroed forecasts 0 (the running mean) everywhere.
    zeroed = type(bundle.weights)(
        tuple(type(layer)(layer.kernel * 0, layer.recurrent * 0, layer.bias * 0)
              for layer in bundle.weights.layers),
        bundle.weights.head_kernel * 0, bundle.weights.head_bias * 0)
    assert trained < holdout_mse(bundle.metadata, zeroed, held)


def test_too_short_a_holdout_is_an_error() -> None:
    bundle = load_bundle("default")
    with pytest.raises(ValueError, match="held-out readings"):
        holdout_mse(bundle.metadata, bundle.weights, [HeldOut(np.ones((40, 1)), 20)])
