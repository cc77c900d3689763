"""Every backend reproduces the Keras model: window forecasts and step-by-step sequences."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models import backends
from models.architecture import ArchitectureSpec, build_forecaster
from models.backends import KerasOpsBackend, LSTMBackend, NumpyBackend, TensorflowBackend
from models.weights import ForecasterWeights, forecast_windows, lstm_step, staggered_zeros, zero_state

WINDOW = 12
CHANNELS = 2
RESTART = 5
# float32 arithmetic in a different order than Keras' fused kernels.
ATOL = 2e-5


@pytest.fixture(scope="module")
def model() -> Any:
    return build_forecaster(ArchitectureSpec(channels=CHANNELS, units=8, layers=2), seed=5)


@pytest.fixture(scope="module")
def weights(model: Any) -> ForecasterWeights:
    return ForecasterWeights.from_model(model)


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(6, WINDOW, CHANNELS)).astype(np.float32)


def _backends(model: Any, weights: ForecasterWeights, states_per_row: int = 1) -> list[LSTMBackend]:
    return [NumpyBackend(weights, initial_rows=4, states_per_row=states_per_row),
            TensorflowBackend(weights, model, window=WINDOW, initial_rows=4, states_per_row=states_per_row),
            KerasOpsBackend(weights, model, initial_rows=4, states_per_row=states_per_row)]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["numpy", "tensorflow", "keras"])
def test_window_mode_matches_keras(model: Any, weights: ForecasterWeights, inputs: np.ndarray,
                                   index: int) -> None:
    backend = _backends(model, weights)[index]
    expected = np.asarray(model(inputs))[:, -1]
    np.testing.assert_allclose(backend.forecast_windows(inputs), expected, atol=ATOL)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["numpy", "tensorflow", "keras"])
def test_stateful_steps_from_zero_state_match_the_keras_sequence(
    model: Any, weights: ForecasterWeights, inputs: np.ndarray, index: int
) -> None:
    backend = _backends(model, weights, states_per_row=2)[index]
    expected = np.asarray(model(inputs))  # forecast after every step
    # The second state of each row restarts before step RESTART: from then on
    # it forecasts as the model does on the sequence from that step.
    restarted = np.asarray(model(inputs[:, RESTART:]))
    # Rows far apart in a table that must grow, to exercise gather/scatter.
    rows = np.array([0, 3, 9, 17, 30, 31])
    backend.ensure_rows(32)
    restart = np.zeros((len(rows), 2), dtype=bool)
    for t in range(WINDOW):
        restart[:, 1] = t == RESTART
        forecasts = backend.advance(rows, inputs[:, t], restart)
        assert forecasts.shape == (len(rows), 2, CHANNELS)
        np.testing.assert_allclose(forecasts[:, 0], expected[:, t], atol=ATOL)
        second = restarted[:, t - RESTART] if t >= RESTART else expected[:, t]
        np.testing.assert_allclose(forecasts[:, 1], second, atol=ATOL)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["numpy", "tensorflow", "keras"])
def test_advance_touches_only_its_rows_and_reset_zeroes(
    model: Any, weights: ForecasterWeights, inputs: np.ndarray, index: int
) -> None:
    backend = _backends(model, weights)[index]
    first = backend.advance(np.array([0, 1]), inputs[:2, 0])[:, 0]
    backend.advance(np.array([1]), inputs[1:2, 1])  # row 0 untouched
    backend.reset(np.array([1]))
    # Row 1 restarted from zero: the same input gives the same first-step forecast.
    again = backend.advance(np.array([1]), inputs[1:2, 0])[:, 0]
    np.testing.assert_allclose(again, first[1:2], atol=ATOL)
    # Row 0 continues from its one step.
    second = backend.advance(np.array([0]), inputs[:1, 1])[:, 0]
    expected = np.asarray(model(inputs[:1, :2]))[:, 1]
    np.testing.assert_allclose(second, expected, atol=ATOL)


@pytest.mark.parametrize("chunk", [backends.MAX_CHUNK_ROWS, 3])
def test_backends_agree_over_a_random_schedule(model: Any, weights: ForecasterWeights, chunk: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Batches of every size (the numpy backend reuses its scratch across
    # sizes, and splits batches larger than a chunk), random rows of a growing
    # table, random restarts: the numpy and tensorflow backends stay together.
    monkeypatch.setattr(backends, "MAX_CHUNK_ROWS", chunk)
    rng = np.random.default_rng(7)
    numpy_backend, tensorflow_backend, _ = _backends(model, weights, states_per_row=2)
    for step in range(40):
        rows_in_table = 8 if step < 20 else 40
        for backend in (numpy_backend, tensorflow_backend):
            backend.ensure_rows(rows_in_table)
        rows = rng.choice(rows_in_table, size=int(rng.integers(1, 9)), replace=False)
        x = rng.normal(size=(len(rows), CHANNELS)).astype(np.float32)
        restart = rng.random((len(rows), 2)) < 0.15
        np.testing.assert_allclose(numpy_backend.advance(rows, x, restart),
                                   tensorflow_backend.advance(rows, x, restart), atol=ATOL)


def test_numpy_window_mode_in_chunks_matches_keras(model: Any, weights: ForecasterWeights,
                                                    inputs: np.ndarray) -> None:
    expected = np.asarray(model(inputs))[:, -1]
    chunked = NumpyBackend(weights).packed.forecast_windows(inputs, chunk=4)  # chunks of 4 and 2
    np.testing.assert_allclose(chunked, expected, atol=ATOL)


def test_reference_step_matches_keras(model: Any, weights: ForecasterWeights, inputs: np.ndarray) -> None:
    # The plain-equations step the packed one is documented against.
    expected = np.asarray(model(inputs))
    h, c = zero_state(weights, len(inputs))
    for t in range(WINDOW):
        forecast, h, c = lstm_step(weights, inputs[:, t], h, c)
        np.testing.assert_allclose(forecast, expected[:, t], atol=ATOL)
    np.testing.assert_allclose(forecast_windows(weights, inputs), expected[:, -1], atol=ATOL)


def test_scratch_arrays_never_share_an_offset_within_a_page() -> None:
    arrays = staggered_zeros([(1024, 34), (1024, 32), (1024, 32), (4 * 1024 * 32,), (3, 5)])
    offsets = [a.ctypes.data % 4096 for a in arrays]
    assert len(set(offsets)) == len(offsets)
    assert all(a.ctypes.data % 64 == 0 and a.flags["C_CONTIGUOUS"] and not a.any() for a in arrays)
    ends = sorted((a.ctypes.data, a.ctypes.data + a.nbytes) for a in arrays)
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(ends))


def test_numpy_backend_runs_without_tensorflow(weights: ForecasterWeights, model: Any, inputs: np.ndarray,
                                               tmp_path: Path) -> None:
    weights.save(tmp_path / "weights.npz")
    np.save(tmp_path / "inputs.npy", inputs)
    script = (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from models.backends import NumpyBackend\n"
        "from models.weights import ForecasterWeights\n"
        f"d = Path({str(tmp_path)!r})\n"
        "b = NumpyBackend(ForecasterWeights.load(d / 'weights.npz'))\n"
        "np.save(d / 'out.npy', b.forecast_windows(np.load(d / 'inputs.npy')))\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    expected = np.asarray(model(inputs))[:, -1]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=ATOL)


JAX_PIPELINE_SCRIPT = """
import os, sys
os.environ["KERAS_BACKEND"] = "jax"
import numpy as np
import keras
from streamer.codec import ReadingBatch
from streamer.config import load_config
from streamer.scoring.pipeline import ScoringPipeline

assert keras.backend.backend() == "jax", keras.backend.backend()
mode, out = sys.argv[1], sys.argv[2]


def forecasts(backend):
    config = load_config(environ={"STREAMER__PREDICTOR__LSTM__MODE": mode,
                                  "STREAMER__PREDICTOR__LSTM__BACKEND": backend})
    pipeline = ScoringPipeline(config)
    rng = np.random.default_rng(0)
    ids = [f"dev-{i:03d}" for i in range(40)]
    rows = []
    for step in range(70):
        values = np.sin(step / 5 + np.arange(40))[:, None] + rng.normal(0, 0.05, (40, 1))
        pipeline.score(ReadingBatch(device_ids=ids, ts_ms=np.full(40, 1_700_000_000_000 + step * 1000),
                                    values=values, fetched_at=np.zeros(40), record_index=np.arange(40)))
        rows.append(pipeline.predictor.forecast(pipeline.registry.resolve(ids)).copy())
    return np.array(rows)


np.savez(out, numpy=forecasts("numpy"), keras=forecasts("keras"),
         tensorflow_imported=np.array("tensorflow" in sys.modules))
"""


@pytest.mark.parametrize("mode", ["stateful", "window"])
def test_keras_ops_backend_scores_under_jax_as_the_numpy_backend_does(mode: str, tmp_path: Path) -> None:
    # The GPU path (GPU machines have JAX and torch, not TensorFlow): the daemon's
    # scoring pipeline with predictor.lstm.backend=keras under Keras' JAX backend,
    # in a fresh interpreter because Keras picks its backend at import.
    out = tmp_path / "forecasts.npz"
    subprocess.run([sys.executable, "-c", JAX_PIPELINE_SCRIPT, mode, str(out)], check=True, timeout=240)
    result = np.load(out)
    assert not bool(result["tensorflow_imported"])
    numpy_forecasts, keras_forecasts = result["numpy"], result["keras"]
    assert np.isfinite(numpy_forecasts[-1]).all()  # past warm-up: every device has a forecast
    np.testing.assert_array_equal(np.isnan(keras_forecasts), np.isnan(numpy_forecasts))
    np.testing.assert_allclose(keras_forecasts, numpy_forecasts, atol=ATOL)


JAX_SCHEDULE_SCRIPT = """
import os, sys
os.environ["KERAS_BACKEND"] = "jax"
import numpy as np
from models.architecture import ArchitectureSpec, build_forecaster
from models.backends import JaxCompiledStep, KerasOpsBackend, NumpyBackend
from models.weights import ForecasterWeights

spec = ArchitectureSpec(channels=2, units=8, layers=2)
weights = ForecasterWeights.from_model(build_forecaster(spec, seed=5))
numpy_backend = NumpyBackend(weights, initial_rows=4, states_per_row=2)
keras_backend = KerasOpsBackend(weights, initial_rows=4, states_per_row=2)
assert isinstance(keras_backend._compiled, JaxCompiledStep)
rng = np.random.default_rng(7)
worst = 0.0
for step in range(60):
    rows_in_table = 8 if step < 20 else 300  # the tables grow mid-run
    for backend in (numpy_backend, keras_backend):
        backend.ensure_rows(rows_in_table)
    # Sizes on both sides of the padding buckets (64, 128, 256 state rows).
    size = int(rng.choice([1, 3, 31, 32, 33, 64, 100, 150]))
    rows = rng.choice(rows_in_table, size=min(size, rows_in_table), replace=False)
    x = rng.normal(size=(len(rows), 2)).astype(np.float32)
    restart = rng.random((len(rows), 2)) < 0.15
    expected = numpy_backend.advance(rows, x, restart)
    worst = max(worst, float(np.abs(keras_backend.advance(rows, x, restart) - expected).max()))
np.save(sys.argv[1], np.array([worst, float("tensorflow" in sys.modules)]))
"""


def test_compiled_jax_step_follows_the_numpy_backend_over_a_random_schedule(tmp_path: Path) -> None:
    # Padding to the buckets, restarts, and tables that grow between calls.
    out = tmp_path / "worst.npy"
    subprocess.run([sys.executable, "-c", JAX_SCHEDULE_SCRIPT, str(out)], check=True, timeout=240)
    worst, tensorflow_imported = np.load(out)
    assert tensorflow_imported == 0.0
    assert worst < ATOL


def test_numpy_backend_grows_into_its_reserved_rows_without_copying(weights: ForecasterWeights,
                                                                    inputs: np.ndarray) -> None:
    backend = NumpyBackend(weights, initial_rows=4, states_per_row=2, reserve_rows=100_000)
    rows = np.array([0, 3])
    backend.advance(rows, inputs[:2, 0])
    stepped = backend.read_rows(rows)["lstm_packed_state"].copy()
    before = backend.state
    backend.ensure_rows(5)
    assert backend.state.shape[0] == 4 + backends.RESERVED_GROWTH_ROWS
    assert np.shares_memory(before, backend.state)  # grown in place
    np.testing.assert_array_equal(backend.read_rows(rows)["lstm_packed_state"], stepped)
    fresh = NumpyBackend(weights, initial_rows=1, states_per_row=2)
    new_row = backend.read_rows(np.array([4]))["lstm_packed_state"]
    np.testing.assert_array_equal(new_row, fresh.read_rows(np.array([0]))["lstm_packed_state"])  # zero state
    backend.ensure_rows(200_000)  # past the reserve: doubles, keeping every row
    assert backend.state.shape[0] >= 200_000
    np.testing.assert_array_equal(backend.read_rows(rows)["lstm_packed_state"], stepped)
