"""The LSTM predictor: modes agree where they should, warm-up, and wiring from config."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from models.architecture import ArchitectureSpec, build_forecaster
from models.backends import BackendName
from models.bundle import BundleMetadata, ModelBundle, load_bundle, save_bundle
from models.normalization import (
    NormalizationSpec,
    normalize,
    normalize_series,
    std_of,
    update_normalize,
    update_stats,
)
from models.weights import forecast_windows
from streamer.config import load_config
from streamer.errors import ConfigError
from streamer.scoring.lstm import LSTMPredictor, PredictorMode
from streamer.scoring.pipeline import ScoringPipeline
from streamer.state.slot_table import SlotTable

WINDOW = 8


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    model = build_forecaster(ArchitectureSpec(channels=1, units=8), seed=2)
    metadata = BundleMetadata(architecture=ArchitectureSpec(channels=1, units=8),
                              normalization=NormalizationSpec(span=16), window=WINDOW, min_context=3,
                              channels=("value",))
    directory = tmp_path_factory.mktemp("bundle")
    save_bundle(directory, model, metadata)
    return load_bundle(directory)


def _series(n: int, devices: int) -> np.ndarray:
    t = np.arange(n)[:, None]
    noise = np.random.default_rng(0).normal(0, 0.1, (n, devices))
    return 10 + 3 * np.sin(t / 5.0 + np.arange(devices)) + noise


def _feed(predictor: LSTMPredictor, series: np.ndarray) -> list[np.ndarray]:
    slots = np.arange(series.shape[1])
    forecasts = []
    for row in series:
        predictor.observe(slots, row[:, None])
        forecasts.append(predictor.forecast(slots)[:, 0].copy())
    return forecasts


def test_stateful_equals_window_mode_after_exactly_one_window(bundle: ModelBundle) -> None:
    series = _series(WINDOW, 3)
    stateful = _feed(LSTMPredictor(SlotTable(4), bundle, mode="stateful", backend="numpy"), series)
    window = _feed(LSTMPredictor(SlotTable(4), bundle, mode="window", backend="numpy"), series)
    # Both have read the same WINDOW readings from zero state.
    np.testing.assert_allclose(stateful[-1], window[-1], rtol=1e-5)
    assert np.isnan(window[-2]).all()  # window mode waits for a full window


@pytest.mark.parametrize("backend", ["numpy", "tensorflow"])
def test_stateful_forecast_reads_the_history_of_the_older_staggered_state(
    bundle: ModelBundle, backend: BackendName
) -> None:
    # Independent of how the predictor schedules its two states: after reading
    # t + 1 readings, the first state has read (t % WINDOW) + 1 of them since
    # its last restart and the second, from reading WINDOW / 2 on, ((t - WINDOW
    # / 2) % WINDOW) + 1. The forecast is the model's from zero state over the
    # longer of those histories, in the device's units.
    half = WINDOW // 2
    series = _series(4 * WINDOW + 3, 2)
    forecasts = _feed(LSTMPredictor(SlotTable(2), bundle, mode="stateful", backend=backend), series)
    spec = bundle.metadata.normalization
    for device in range(series.shape[1]):
        u, mean, std = normalize_series(spec, series[:, device:device + 1])
        for t in range(bundle.metadata.min_context - 1, len(series)):
            history = t % WINDOW + 1
            if t >= half:
                history = max(history, (t - half) % WINDOW + 1)
            window = u[None, t + 1 - history:t + 1].astype(np.float32)
            expected = mean[t] + std[t] * forecast_windows(bundle.weights, window)[0]
            np.testing.assert_allclose(forecasts[t][device], expected[0], rtol=1e-5, err_msg=f"t={t}")


@pytest.mark.parametrize(("mode", "backend"), [("stateful", "numpy"), ("stateful", "tensorflow"),
                                             ("window", "numpy")])
def test_an_empty_batch_changes_nothing(bundle: ModelBundle, mode: PredictorMode,
                                        backend: BackendName) -> None:
    predictor = LSTMPredictor(SlotTable(4), bundle, mode=mode, backend=backend)
    series = _series(WINDOW, 2)
    before = _feed(predictor, series)[-1]
    predictor.observe(np.array([], dtype=np.intp), np.zeros((0, 1)))
    np.testing.assert_array_equal(predictor.forecast(np.arange(2))[:, 0], before)
    assert np.isfinite(before).all()


def test_stateful_forecasts_start_at_min_context_and_stay_finite(bundle: ModelBundle) -> None:
    forecasts = _feed(LSTMPredictor(SlotTable(2), bundle, mode="stateful", backend="numpy"), _series(50, 2))
    assert np.isnan(forecasts[0]).all() and np.isnan(forecasts[1]).all()
    assert np.isfinite(np.array(forecasts[2:])).all()


def test_stateful_forecast_uses_at_most_one_window_of_history(bundle: ModelBundle) -> None:
    # Readings older than a window cannot influence the forecast: two series
    # that differ only before the last WINDOW readings forecast the same.
    a = _series(3 * WINDOW, 1)
    b = a.copy()
    b[:WINDOW] += 50.0
    fa = _feed(LSTMPredictor(SlotTable(1), bundle, mode="window", backend="numpy"), a)
    fb = _feed(LSTMPredictor(SlotTable(1), bundle, mode="window", backend="numpy"), b)
    assert not np.allclose(fa[WINDOW], fb[WINDOW])  # inside the window: different
    # The normalisation statistics still remember the old values, so compare in the
    # model's own terms: the window contents are identical, the statistics are not,
    # and the forecasts converge as the statistics forget.
    assert abs(fa[-1][0] - fb[-1][0]) < abs(fa[WINDOW][0] - fb[WINDOW][0])


@pytest.mark.parametrize("span", [16.0, 256.0, 1e9])
def test_serving_normalisation_is_bit_for_bit_the_training_one(span: float) -> None:
    # The predictor's fused, in-place update must not drift from the functions
    # training uses: same values to the last bit, warm-up weights included.
    rng = np.random.default_rng(int(span) % 97)
    spec = NormalizationSpec(span=span)
    for young in (True, False):
        devices, channels = 64, 2
        variance = rng.exponential(50, (devices, channels)) * rng.integers(0, 2, (devices, 1))
        moments = np.stack([rng.normal(0, 100, (devices, channels)), variance], axis=1)
        count = rng.integers(0, 40 if young else 10**6, devices) + (0 if young else 10**5)
        x = rng.normal(0, 100, (devices, channels)) * rng.choice([1e-9, 1.0, 1e6], (devices, 1))
        mean, var = update_stats(spec, moments[:, 0], moments[:, 1], count, x)
        std = std_of(spec, mean, var)
        u = normalize(spec, x, mean, std).astype(np.float32)
        fused_std, fused_u = update_normalize(spec, moments, count, x)
        for expected, actual in ((mean, moments[:, 0]), (var, moments[:, 1]), (std, fused_std), (u, fused_u)):
            np.testing.assert_array_equal(actual, expected)


def test_pipeline_uses_the_configured_bundle(bundle: ModelBundle) -> None:
    base = load_config(None, environ={})
    config = msgspec.structs.replace(base, predictor=msgspec.structs.replace(
        base.predictor, kind="lstm",
        lstm=msgspec.structs.replace(base.predictor.lstm, bundle=str(bundle.path), mode="stateful")))
    pipeline = ScoringPipeline(config)
    assert pipeline.predictor.version == bundle.version
    assert pipeline.predictor.version.startswith("lstm-")


def test_bundle_channels_must_match_the_readings(bundle: ModelBundle) -> None:
    base = load_config(None, environ={})
    config = msgspec.structs.replace(
        base,
        readings=msgspec.structs.replace(base.readings, channels=["temp", "vibration"]),
        predictor=msgspec.structs.replace(base.predictor, kind="lstm", lstm=msgspec.structs.replace(
            base.predictor.lstm, bundle=str(bundle.path))),
    )
    with pytest.raises(ConfigError, match=r"predictor\.lstm\.bundle"):
        ScoringPipeline(config)


def test_bundle_version_changes_with_content(bundle: ModelBundle, tmp_path: Path) -> None:
    model = build_forecaster(ArchitectureSpec(channels=1, units=8), seed=3)  # other weights
    other = save_bundle(tmp_path / "other", model, bundle.metadata)
    assert other.version != bundle.version


def test_the_default_daemon_path_never_imports_tensorflow() -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from streamer.config import load_config\n"
        "from streamer.scoring.pipeline import ScoringPipeline\n"
        "pipeline = ScoringPipeline(load_config(None, environ={}))\n"
        "assert pipeline.predictor.version.startswith('lstm-'), pipeline.predictor.version\n"
        "loaded = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
