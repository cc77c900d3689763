"""Training: a tiny run yields a bundle that loads, forecasts like the numpy step, and reports metrics."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from models.architecture import ArchitectureSpec
from models.bundle import BundleMetadata, load_bundle, save_bundle
from models.data import fingerprint
from models.normalization import NormalizationSpec
from models.parity import PARITY_TOLERANCE, parity_error
from models.training import SUGGESTED_THRESHOLD, forecast_errors, train
from models.weights import forecast_windows
from models.windows import Sequences

FloatArray = npt.NDArray[np.float64]
# Tiny on purpose: the suite stays fast; the shipped bundle is trained by `make bundle`.
TINY: dict[str, Any] = {
    "window": 16, "min_context": 4, "architecture": ArchitectureSpec(channels=2, units=8),
    "normalization": NormalizationSpec(span=64.0), "epochs": 2, "batch_size": 64, "learning_rate": 1e-2,
    "val_fraction": 0.2, "seed": 3, "max_sequences": 300, "verbose": 0,
}


def _fleet(devices: int = 4, steps: int = 300) -> dict[str, FloatArray]:
    rng = np.random.default_rng(0)
    t = np.arange(steps)[:, None]
    return {
        f"d{i}": 10.0 * i + 3.0 * np.sin(2 * np.pi * t / 40.0 + i + np.arange(2))
        + rng.normal(0, 0.3, (steps, 2))
        for i in range(devices)
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, BundleMetadata, Path]:
    series = _fleet()
    model, metadata = train(series, channels=("a", "b"), command="streamer train --test", **TINY)
    path = tmp_path_factory.mktemp("bundle") / "tiny"
    save_bundle(path, model, metadata)
    return model, metadata, path


Trained = tuple[Any, BundleMetadata, Path]


def test_bundle_reads_back_with_the_same_version_and_metadata(trained: Trained) -> None:
    model, metadata, path = trained
    saved = save_bundle(path.parent / "again", model, metadata)
    loaded = load_bundle(path)
    assert loaded.version == saved.version
    assert loaded.version.startswith("lstm-")
    assert loaded.metadata == dataclasses.replace(metadata, parity=loaded.metadata.parity)
    # The parity record: what the trained Keras model forecasts on the fixed input,
    # reproduced by the numpy step on the saved weights.
    assert parity_error(loaded.weights, loaded.metadata.window, loaded.metadata.parity) < PARITY_TOLERANCE
    assert loaded.metadata.channels == ("a", "b")
    assert loaded.metadata.window == 16
    assert loaded.metadata.min_context == 4


def test_keras_model_loads_in_safe_mode_and_matches_the_numpy_forecaster(
    trained: Trained,
) -> None:
    bundle = load_bundle(trained[2])
    model = bundle.keras_model()
    windows = np.random.default_rng(1).normal(0, 1.5, (5, 16, 2)).astype(np.float32)
    keras_forecast = np.asarray(model.predict(windows, verbose=0))[:, -1]
    numpy_forecast = forecast_windows(bundle.weights, windows)
    np.testing.assert_allclose(numpy_forecast, keras_forecast, atol=1e-5)
    # The weights are trained, not the initial ones: the forecast is not trivially zero.
    assert np.abs(keras_forecast).max() > 1e-3


def test_metadata_records_training_and_validation(trained: Trained) -> None:
    _, metadata, _ = trained
    series = _fleet()
    training = metadata.training
    assert training["data_fingerprint"] == fingerprint(series, ("a", "b"))
    assert training["devices"] == 4
    assert training["steps"] == 1200
    assert 0 < training["sequences"] <= 300
    assert training["validation_sequences"] > 0
    assert training["seed"] == 3
    assert training["epochs_run"] in (1, 2)
    assert training["command"] == "streamer train --test"
    assert metadata.threshold == SUGGESTED_THRESHOLD
    validation = metadata.validation
    for key in ("mse", "mae", "naive_mse", "naive_mae", "mse_ratio_to_naive"):
        assert np.isfinite(validation[key]) and validation[key] > 0, key
    assert validation["mse_ratio_to_naive"] == pytest.approx(validation["mse"] / validation["naive_mse"])


def test_naive_metric_is_last_input_against_target_on_weighted_steps() -> None:
    inputs = np.array([[[1.0], [2.0], [3.0]]], np.float32)
    targets = np.array([[[9.0], [2.5], [5.0]]], np.float32)
    sequences = Sequences(inputs, targets, np.array([[0.0, 1.0, 1.0]], np.float32))
    errors = forecast_errors(inputs, sequences)  # step 0 (error 8) carries no weight
    assert errors.mse == pytest.approx((0.25 + 4.0) / 2)
    assert errors.mae == pytest.approx((0.5 + 2.0) / 2)


def test_seeded_runs_are_deterministic() -> None:
    series = _fleet(devices=2, steps=120)
    settings = {**TINY, "epochs": 1, "max_sequences": 60}
    first, meta_first = train(series, **settings)
    second, meta_second = train(series, **settings)
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert meta_first.validation == pytest.approx(meta_second.validation)


def test_channel_count_must_match_the_architecture() -> None:
    with pytest.raises(ValueError, match="channel"):
        train(_fleet(devices=1, steps=100), **{**TINY, "architecture": ArchitectureSpec(channels=3, units=4)})
