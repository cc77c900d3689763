"""LSTM weights as plain numpy arrays, and the LSTM step written from them.

Edge nodes run the forecaster with numpy alone: no TensorFlow import. The
step follows Keras' LSTM exactly: gates in the order input, forget, cell,
output; sigmoid recurrent activation; tanh activation.

Two versions of the step live here. :func:`lstm_step` is the reference, the
Keras equations as written. :class:`PackedLSTM` is the same maths with the
weights rearranged so a step is a dozen large numpy calls on contiguous
arrays; the numpy backend serves with it (see its docstring for what is
rearranged and why, and ``benchmarks/stateful-numpy-profile.md`` for the
measurements behind each choice).
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


def _sigmoid(z: F32) -> F32:  # the reference step's sigmoid, as Keras defines it
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


# Keras stores the gate blocks of kernel, recurrent kernel and bias as input,
# forget, cell candidate, output. The packed step orders them output, input,
# forget, candidate: the three sigmoid gates together (one call turns them into
# sigmoids), and input, forget next to candidate, cell (one call forms both
# products of the cell update).
PACKED_GATE_ORDER = (3, 0, 1, 2)
GATES = 4
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)

# Large arrays start on a fresh page plus 16 bytes, so two scratch arrays of a
# step often sit a multiple of 4 KiB apart. The CPU then mistakes reads of one
# for reads of what was just written to the other ("4K aliasing"): with the
# matmul's input and output so placed it ran at half speed (202 us instead of
# 110 us per call, benchmarks/stateful-numpy-profile.md). Scratch arrays are
# carved from one block, each shifted by a different number of cache lines.
_PAGE = 4096
_STAGGER = 576  # bytes: nine 64-byte cache lines
_CACHE_LINE = 64


def staggered_zeros(shapes: list[tuple[int, ...]]) -> list[F32]:
    """Zeroed float32 arrays for ``shapes``, no two at the same offset within a page."""
    itemsize = np.dtype(np.float32).itemsize
    starts = []
    end = 0
    for index, shape in enumerate(shapes):
        start = -(-end // _PAGE) * _PAGE + (index * _STAGGER) % _PAGE
        starts.append(start // itemsize)
        end = start + int(np.prod(shape)) * itemsize
    block = np.zeros((end + _PAGE) // itemsize, np.float32)
    # Align the block to a cache line, so the offsets above are the real ones.
    shift = (-block.ctypes.data % _CACHE_LINE) // itemsize
    return [block[shift + start:shift + start + int(np.prod(shape))].reshape(shape)
            for start, shape in zip(starts, shapes, strict=True)]


@dataclass(frozen=True)
class _Scratch:
    """Scratch arrays for one batch shape: a state block to gather into, and the step's work arrays."""

    state: F32  # (rows, states, width)
    hidden: F32  # (rows * states, U): a layer's new doubled hidden state
    # (5, rows * states, U), C-contiguous: the gates in PACKED_GATE_ORDER, then the cell state.
    work: F32


class PackedLSTM:
    """The forecaster's weights rearranged for a fast numpy step: the same maths as :func:`lstm_step`.

    A *state block* is a float32 array ``(rows, states, width)``: for each
    row, ``states`` LSTM states that read the same input. One state is laid
    out as ``[x, 1, h_0, 1, h_1, ..., 1, h_last, c_0, ..., c_last]``: the
    last input, then per layer a column of ones and the hidden state
    (doubled, see below), then the cell states. Layer ``l`` reads the
    contiguous columns ``[input, 1, h_l]`` (its input being ``x`` or the
    previous layer's new hidden state) and multiplies them by the stacked
    ``[kernel; bias; recurrent]``: one matrix product, straight from the
    gathered rows, with the bias and, for one channel, the input's outer
    product folded in. A row's states are adjacent, so gathering a row is one
    copy. The zero state is zero except for the columns of ones.

    What else is rearranged, and why (each measured; numbers in
    ``benchmarks/stateful-numpy-profile.md``):

    - The product is computed gate by gate into a ``(4, rows, U)`` array, so
      each gate is a contiguous block: numpy's elementwise loops run several
      times slower on a column slice of a ``(rows, 4U)`` array. For the same
      reason the cell states are copied out of the block (next to the gates,
      so that ``[candidate, c] *= [input, forget]`` is one call), updated,
      and copied back.
    - ``sigmoid(z) = (1 + tanh(z / 2)) / 2``: the ``/ 2`` is folded into the
      input, forget and output gate weights, so one ``tanh`` call covers all
      four gates and one add turns three of them into twice their sigmoid.
    - Hidden states are kept doubled (``2h``, what ``2 sigmoid(o) tanh(c)``
      gives without a further multiply); the ``1 / 2`` is folded into every
      weight that reads them: recurrent kernels, the next layer's kernel, the head.
    - Scratch arrays are allocated once and reused, every operation writing
      into them with ``out=``.

    Scaling by powers of two is exact in float32, so only the order of
    rounding differs from the reference step.
    """

    def __init__(self, weights: ForecasterWeights) -> None:
        units = self.units = weights.units
        channels = self.channels = weights.channels
        layers = self.layers = len(weights.layers)
        self.width = channels + layers * (units + 1) + layers * units
        # Column where layer l's hidden state starts (its column of ones is just before).
        self._hidden_start = [channels + 1 + layer * (units + 1) for layer in range(layers)]
        self._cell_start = [channels + layers * (units + 1) + layer * units for layer in range(layers)]
        # Layer l reads [input, 1, h_l]: x for the first layer, h_{l-1} above it.
        self._reads = [slice(0 if layer == 0 else self._hidden_start[layer - 1],
                             self._hidden_start[layer] + units) for layer in range(layers)]
        self._hidden_columns = [slice(start, start + units) for start in self._hidden_start]
        self._cell_columns = [slice(start, start + units) for start in self._cell_start]
        self._head_reads = slice(self._hidden_start[-1] - 1, self._hidden_start[-1] + units)
        self.zero_row: F32 = np.zeros(self.width, np.float32)
        self.zero_row[[start - 1 for start in self._hidden_start]] = _ONE

        order = np.array(PACKED_GATE_ORDER)
        # Per gate column block: the sigmoid gates read z / 2.
        gate_scale = np.array([_HALF, _HALF, _HALF, _ONE], np.float32)
        self.stacked: list[F32] = []  # per layer (4, in + 1 + U, U)
        for index, layer in enumerate(weights.layers):
            # Layers above the first read the previous layer's doubled hidden state.
            kernel = layer.kernel if index == 0 else layer.kernel * _HALF
            rows = np.concatenate([kernel, layer.bias[None, :], layer.recurrent * _HALF])
            by_gate = rows.reshape(rows.shape[0], GATES, units)[:, order] * gate_scale[None, :, None]
            self.stacked.append(np.ascontiguousarray(by_gate.transpose(1, 0, 2), dtype=np.float32))
        # The head reads [1, h_last]: [bias; kernel / 2].
        self.head: F32 = np.concatenate([weights.head_bias[None, :], weights.head_kernel * _HALF]
                                        ).astype(np.float32)
        self._blocks: list[F32] | None = None
        self._scratch: _Scratch | None = None

    def state_shape(self, rows: int, states: int = 1) -> tuple[int, int, int]:
        """Shape of a state block."""
        return (rows, states, self.width)

    def zero_state(self, rows: int, states: int = 1) -> F32:
        """A state block at zero state."""
        block = np.empty(self.state_shape(rows, states), np.float32)
        block[...] = self.zero_row
        return block

    def state_buffer(self, rows: int, states: int = 1) -> F32:
        """A state block that is part of this step's scratch, to gather into (contents undefined)."""
        return self._scratch_for(rows, states).state

    def _scratch_for(self, rows: int, states: int) -> _Scratch:
        scratch = self._scratch
        if scratch is not None and scratch.state.shape[:2] == (rows, states):
            return scratch
        # Sized for the largest batch so far; a smaller batch uses the first rows.
        blocks = self._blocks
        if blocks is None or blocks[0].shape[1] != states or blocks[0].shape[0] < rows:
            grow = blocks is not None and blocks[0].shape[1] == states
            capacity = max(rows, 2 * blocks[0].shape[0]) if grow and blocks is not None else rows
            count = capacity * states
            blocks = self._blocks = staggered_zeros([
                self.state_shape(capacity, states), (count, self.units), ((GATES + 1) * count * self.units,)])
        count = rows * states
        scratch = _Scratch(
            state=blocks[0][:rows],
            hidden=blocks[1][:count],
            # Kept flat so that the first `count` rows of every block are one contiguous stretch.
            work=blocks[-1][:(GATES + 1) * count * self.units].reshape(GATES + 1, count, self.units),
        )
        self._scratch = scratch
        return scratch

    def advance(self, state: F32, x: F32, restart: npt.NDArray[np.bool_] | None = None) -> F32:
        """Advance every state of a state block by one step, in place.

        Args:
            state: A C-contiguous state block ``(rows, states, width)``.
            x: Normalised inputs ``(rows, channels)``, read by all of a row's states.
            restart: ``(rows, states)``: states set to zero before the step.

        Returns:
            Forecasts ``(rows, states, channels)``.
        """
        rows, states = state.shape[:2]
        scratch = self._scratch_for(rows, states)
        flat = state.reshape(rows * states, self.width)
        if restart is not None:
            restarted = restart.reshape(-1).nonzero()[0]
            if len(restarted):
                flat[restarted] = self.zero_row
        # One copy per state: the iteration over (rows, states) of a
        # broadcast source would go element by element.
        for index in range(states):
            state[:, index, :self.channels] = x
        work = scratch.work
        gates = work[:GATES]
        sigmoid_gates = work[:3]  # output, input, forget
        output_gate = work[0]
        input_forget = work[1:3]
        candidate_cell = work[3:5]
        candidate, cell = work[3], work[4]
        hidden = scratch.hidden
        for layer in range(self.layers):
            cell_columns = flat[:, self._cell_columns[layer]]
            np.copyto(cell, cell_columns)
            np.matmul(flat[:, self._reads[layer]], self.stacked[layer], out=gates)
            np.tanh(gates, out=gates)
            np.add(sigmoid_gates, _ONE, out=sigmoid_gates)  # 2 sigmoid(z)
            # c' = sigmoid(i) g + sigmoid(f) c = (2 sigmoid(i) g + 2 sigmoid(f) c) / 2
            np.multiply(candidate_cell, input_forget, out=candidate_cell)
            np.add(cell, candidate, out=cell)
            np.multiply(cell, _HALF, out=cell)
            # 2h' = 2 sigmoid(o) tanh(c')
            np.tanh(cell, out=hidden)
            np.multiply(hidden, output_gate, out=hidden)
            # The next layer reads the new hidden state from the block.
            np.copyto(flat[:, self._hidden_columns[layer]], hidden)
            np.copyto(cell_columns, cell)
        forecast: F32 = flat[:, self._head_reads] @ self.head
        return forecast.reshape(rows, states, self.channels)

    def forecast_windows(self, windows: F32, chunk: int = 4096) -> F32:
        """Forecast after each window ``(batch, time, channels)`` from zero state (window mode).

        Windows are stepped ``chunk`` at a time, which bounds the scratch.
        """
        parts = []
        for start in range(0, windows.shape[0], chunk):
            part = windows[start:start + chunk]
            state = self.zero_state(part.shape[0])
            forecast = np.zeros((part.shape[0], 1, self.channels), np.float32)
            for t in range(part.shape[1]):
                forecast = self.advance(state, part[:, t])
            parts.append(forecast[:, 0])
        return np.concatenate(parts) if parts else np.zeros((0, self.channels), np.float32)
