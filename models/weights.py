"""LSTM weights as plain numpy arrays, and the LSTM step written from them.

Edge nodes run the forecaster with numpy alone: no TensorFlow import. The
step follows Keras' LSTM exactly: gates in the order input, forget, cell,
output; sigmoid recurrent activation; tanh activation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class LSTMLayerWeights:
    """One LSTM layer: ``kernel (in, 4U)``, ``recurrent (U, 4U)``, ``bias (4U,)``."""

    kernel: F32
    recurrent: F32
    bias: F32

    @property
    def units(self) -> int:
        """Hidden size U."""
        return int(self.recurrent.shape[0])


@dataclass(frozen=True)
class ForecasterWeights:
    """All weights of the forecaster."""

    layers: tuple[LSTMLayerWeights, ...]
    head_kernel: F32  # (U, channels)
    head_bias: F32  # (channels,)

    @property
    def units(self) -> int:
        """Hidden size of every layer."""
        return self.layers[0].units

    @property
    def channels(self) -> int:
        """Input and output channels."""
        return int(self.head_kernel.shape[1])

    @classmethod
    def from_model(cls, model: Any) -> ForecasterWeights:
        """Read the weights of a model built by :func:`models.architecture.build_forecaster`."""
        layers = []
        index = 0
        while True:
            try:
                layer = model.get_layer(f"lstm_{index}")
            except ValueError:
                break
            kernel, recurrent, bias = (np.asarray(w, dtype=np.float32) for w in layer.get_weights())
            layers.append(LSTMLayerWeights(kernel, recurrent, bias))
            index += 1
        head = model.get_layer("head").get_weights()
        head_kernel, head_bias = (np.asarray(w, dtype=np.float32) for w in head)
        return cls(tuple(layers), head_kernel, head_bias)

    def save(self, path: Path) -> None:
        """Write as ``.npz``."""
        arrays: dict[str, F32] = {"head_kernel": self.head_kernel, "head_bias": self.head_bias}
        for i, layer in enumerate(self.layers):
            arrays[f"lstm_{i}_kernel"] = layer.kernel
            arrays[f"lstm_{i}_recurrent"] = layer.recurrent
            arrays[f"lstm_{i}_bias"] = layer.bias
        with path.open("wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> ForecasterWeights:
        """Read weights written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            layers = []
            i = 0
            while f"lstm_{i}_kernel" in data:
                layers.append(LSTMLayerWeights(
                    data[f"lstm_{i}_kernel"].astype(np.float32),
                    data[f"lstm_{i}_recurrent"].astype(np.float32),
                    data[f"lstm_{i}_bias"].astype(np.float32),
                ))
                i += 1
            return cls(tuple(layers), data["head_kernel"].astype(np.float32),
                       data["head_bias"].astype(np.float32))


def _sigmoid(z: F32) -> F32:
    # exp of a large positive number overflows harmlessly to inf -> 0.0 here.
    with np.errstate(over="ignore"):
        result: F32 = np.reciprocal(np.exp(-z) + np.float32(1.0))
    return result


def lstm_step(weights: ForecasterWeights, x: F32, h: F32, c: F32) -> tuple[F32, F32, F32]:
    """Advance every row by one step.

    Args:
        weights: The forecaster.
        x: Normalised inputs ``(batch, channels)``.
        h: Hidden states ``(layers, batch, units)``.
        c: Cell states ``(layers, batch, units)``.

    Returns:
        ``(forecast (batch, channels), h', c')`` with fresh state arrays.
    """
    new_h = np.empty_like(h)
    new_c = np.empty_like(c)
    inputs = x
    for i, layer in enumerate(weights.layers):
        units = layer.units
        z = inputs @ layer.kernel
        z += h[i] @ layer.recurrent
        z += layer.bias
        gate_i = _sigmoid(z[:, :units])
        gate_f = _sigmoid(z[:, units:2 * units])
        candidate = np.tanh(z[:, 2 * units:3 * units])
        gate_o = _sigmoid(z[:, 3 * units:])
        cell = gate_f * c[i] + gate_i * candidate
        new_c[i] = cell
        new_h[i] = gate_o * np.tanh(cell)
        inputs = new_h[i]
    forecast: F32 = (inputs @ weights.head_kernel + weights.head_bias).astype(np.float32, copy=False)
    return forecast, new_h, new_c


def zero_state(weights: ForecasterWeights, batch: int) -> tuple[F32, F32]:
    """Zero ``(h, c)`` for ``batch`` rows."""
    shape = (len(weights.layers), batch, weights.units)
    return np.zeros(shape, np.float32), np.zeros(shape, np.float32)


def forecast_windows(weights: ForecasterWeights, windows: F32) -> F32:
    """Forecast after each window ``(batch, time, channels)`` from zero state (window mode)."""
    h, c = zero_state(weights, windows.shape[0])
    forecast = np.zeros((windows.shape[0], weights.channels), np.float32)
    for t in range(windows.shape[1]):
        forecast, h, c = lstm_step(weights, windows[:, t], h, c)
    return forecast
