"""Every backend reproduces the Keras model: window forecasts and step-by-step sequences."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.architecture import ArchitectureSpec, build_forecaster
from models.backends import KerasOpsBackend, LSTMBackend, NumpyBackend, TensorflowBackend
from models.weights import ForecasterWeights

WINDOW = 12
CHANNELS = 2
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


def _backends(model: Any, weights: ForecasterWeights) -> list[LSTMBackend]:
    return [NumpyBackend(weights, initial_rows=4), TensorflowBackend(weights, model, window=WINDOW,
                                                                      initial_rows=4),
            KerasOpsBackend(weights, model, initial_rows=4)]


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
    backend = _backends(model, weights)[index]
    expected = np.asarray(model(inputs))  # forecast after every step
    # Rows far apart in a table that must grow, to exercise gather/scatter.
    rows = np.array([0, 3, 9, 17, 30, 31])
    backend.ensure_rows(32)
    for t in range(WINDOW):
        np.testing.assert_allclose(backend.advance(rows, inputs[:, t]), expected[:, t], atol=ATOL)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["numpy", "tensorflow", "keras"])
def test_advance_touches_only_its_rows_and_reset_zeroes(
    model: Any, weights: ForecasterWeights, inputs: np.ndarray, index: int
) -> None:
    backend = _backends(model, weights)[index]
    first = backend.advance(np.array([0, 1]), inputs[:2, 0])
    backend.advance(np.array([1]), inputs[1:2, 1])  # row 0 untouched
    backend.reset(np.array([1]))
    # Row 1 restarted from zero: the same input gives the same first-step forecast.
    again = backend.advance(np.array([1]), inputs[1:2, 0])
    np.testing.assert_allclose(again, first[1:2], atol=ATOL)
    # Row 0 continues from its one step.
    second = backend.advance(np.array([0]), inputs[:1, 1])
    expected = np.asarray(model(inputs[:1, :2]))[:, 1]
    np.testing.assert_allclose(second, expected, atol=ATOL)


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
