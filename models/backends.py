"""Compute backends for the forecaster, behind one interface.

Every backend holds a *state table* of LSTM states, one row per state (the
predictor decides which rows belong to which device), on its compute device,
and offers two operations, each one call per micro-batch:

- ``advance(rows, x)``: gather the rows' states, run one LSTM step on the
  normalised inputs ``x``, scatter the states back, return the forecasts;
- ``forecast_windows(windows)``: window mode, the model's forecast after each
  window from zero state.

Backends: ``numpy`` (from exported weights; never imports TensorFlow),
``tensorflow`` (compiled ``tf.function``; the window path calls the Keras
model itself), ``keras`` (``keras.ops`` only, so it runs under the JAX or
torch backend of Keras 3, on a GPU where there is one).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from models.weights import F32, ForecasterWeights, lstm_step

BackendName = Literal["numpy", "tensorflow", "keras"]
IndexArray = npt.NDArray[np.intp]


class LSTMBackend(Protocol):
    """A state table plus the two batched operations."""

    name: str

    def ensure_rows(self, rows: int) -> None:
        """Make room for at least ``rows`` states (new rows start at zero)."""
        ...

    def reset(self, rows: IndexArray) -> None:
        """Set the states of ``rows`` to zero."""
        ...

    def advance(self, rows: IndexArray, x: F32) -> F32:
        """One step for distinct ``rows`` with inputs ``x (len(rows), channels)``; returns forecasts."""
        ...

    def forecast_windows(self, windows: F32) -> F32:
        """Forecast after each window ``(batch, time, channels)`` from zero state."""
        ...


def lstm_cell(ops: Any, inputs: Any, h: Any, c: Any, kernel: Any, recurrent: Any,
              bias: Any) -> tuple[Any, Any]:
    """One Keras-order LSTM cell (gates i, f, c, o) in the op namespace ``ops``.

    ``ops`` is ``tensorflow`` or ``keras.ops``: both spell matmul, split,
    sigmoid and tanh the same way, so one definition serves both backends.
    """
    z = ops.matmul(inputs, kernel) + ops.matmul(h, recurrent) + bias
    gate_i, gate_f, candidate, gate_o = ops.split(z, 4, axis=1)
    cell = ops.sigmoid(gate_f) * c + ops.sigmoid(gate_i) * ops.tanh(candidate)
    return ops.sigmoid(gate_o) * ops.tanh(cell), cell


def _grown_capacity(current: int, rows: int) -> int:
    capacity = max(current, 1)
    while capacity < rows:
        capacity *= 2
    return capacity


class NumpyBackend:
    """The LSTM step in numpy from exported weights: for CPUs and edge nodes."""

    name = "numpy"

    def __init__(self, weights: ForecasterWeights, initial_rows: int = 1024) -> None:
        # The step's matrix products are small (batch x 33 x 128): a second
        # BLAS thread costs more in hand-offs than it saves, and under CPU
        # contention it made throughput swing from 97K to 645K points/s
        # (measured with `streamer bench model`). One thread is steady.
        threadpool_limits(limits=1, user_api="blas")
        self.weights = weights
        shape = (len(weights.layers), initial_rows, weights.units)
        self.h = np.zeros(shape, np.float32)
        self.c = np.zeros(shape, np.float32)

    def ensure_rows(self, rows: int) -> None:
        """Grow the state table by doubling."""
        current = self.h.shape[1]
        if rows <= current:
            return
        capacity = _grown_capacity(current, rows)
        for name in ("h", "c"):
            old = getattr(self, name)
            new = np.zeros((old.shape[0], capacity, old.shape[2]), np.float32)
            new[:, :current] = old
            setattr(self, name, new)

    def reset(self, rows: IndexArray) -> None:
        """Zero the rows' states."""
        self.h[:, rows] = 0.0
        self.c[:, rows] = 0.0

    def advance(self, rows: IndexArray, x: F32) -> F32:
        """Gather, step, scatter."""
        forecast, h, c = lstm_step(self.weights, x, self.h[:, rows], self.c[:, rows])
        self.h[:, rows] = h
        self.c[:, rows] = c
        return forecast

    def forecast_windows(self, windows: F32) -> F32:
        """Window mode in numpy."""
        from models.weights import forecast_windows

        return forecast_windows(self.weights, windows)


class TensorflowBackend:
    """Compiled TensorFlow: state in ``tf.Variable`` tables, step and window as ``tf.function``."""

    name = "tensorflow"

    def __init__(self, weights: ForecasterWeights, keras_model: Any, *, window: int,
                 jit_compile: bool = False, initial_rows: int = 1024) -> None:
        import tensorflow as tf

        self._tf = tf
        self.weights = weights
        self.layers = [(tf.constant(w.kernel), tf.constant(w.recurrent), tf.constant(w.bias))
                       for w in weights.layers]
        self.head = (tf.constant(weights.head_kernel), tf.constant(weights.head_bias))
        self.units = weights.units
        self.h: Any = None
        self.c: Any = None
        self._allocate(initial_rows)
        channels = weights.channels
        self._advance = tf.function(
            self._advance_graph, jit_compile=jit_compile, reduce_retracing=True,
            input_signature=[tf.TensorSpec([None], tf.int64), tf.TensorSpec([None, channels], tf.float32)],
        )
        model = keras_model
        self._window = tf.function(
            lambda windows: model(windows, training=False)[:, -1],
            jit_compile=jit_compile,
            input_signature=[tf.TensorSpec([None, window, channels], tf.float32)],
        )

    def _allocate(self, rows: int) -> None:
        tf = self._tf
        shape = (len(self.layers), rows, self.units)
        old_h, old_c = self.h, self.c
        h = np.zeros(shape, np.float32)
        c = np.zeros(shape, np.float32)
        if old_h is not None:
            current = int(old_h.shape[1])
            h[:, :current] = old_h.numpy()
            c[:, :current] = old_c.numpy()
        self.h = tf.Variable(h, trainable=False)
        self.c = tf.Variable(c, trainable=False)

    def ensure_rows(self, rows: int) -> None:
        """Grow the state table by doubling (reallocates the variables)."""
        current = int(self.h.shape[1])
        if rows > current:
            self._allocate(_grown_capacity(current, rows))
            # The compiled step captured the old variables: trace it again.
            self._advance = self._tf.function(
                self._advance_graph, jit_compile=False, reduce_retracing=True,
                input_signature=[self._tf.TensorSpec([None], self._tf.int64),
                                 self._tf.TensorSpec([None, self.weights.channels], self._tf.float32)],
            )

    def reset(self, rows: IndexArray) -> None:
        """Zero the rows' states."""
        if len(rows) == 0:
            return
        tf = self._tf
        index = tf.constant(np.asarray(rows, np.int64)[:, None])
        zeros = tf.zeros((len(rows), self.units), tf.float32)
        for layer in range(len(self.layers)):
            layer_index = tf.concat([tf.fill((len(rows), 1), tf.constant(layer, tf.int64)), index], axis=1)
            self.h.scatter_nd_update(layer_index, zeros)
            self.c.scatter_nd_update(layer_index, zeros)

    def _advance_graph(self, rows: Any, x: Any) -> Any:
        tf = self._tf
        inputs = x
        new_h = []
        new_c = []
        for layer, (kernel, recurrent, bias) in enumerate(self.layers):
            # gather_nd on the variable reads only the rows; gathering from
            # self.h[layer] would first copy the whole layer of the table.
            index = tf.stack([tf.fill(tf.shape(rows), tf.constant(layer, tf.int64)), rows], axis=1)
            h = tf.gather_nd(self.h, index)
            c = tf.gather_nd(self.c, index)
            hidden, cell = lstm_cell(tf, inputs, h, c, kernel, recurrent, bias)
            new_h.append(hidden)
            new_c.append(cell)
            inputs = hidden
        layer_count = len(self.layers)
        count = tf.shape(rows)[0]
        layer_ids = tf.repeat(tf.range(layer_count, dtype=tf.int64), count)
        row_ids = tf.tile(rows, [layer_count])
        index = tf.stack([layer_ids, row_ids], axis=1)
        self.h.scatter_nd_update(index, tf.concat(new_h, axis=0))
        self.c.scatter_nd_update(index, tf.concat(new_c, axis=0))
        return tf.matmul(inputs, self.head[0]) + self.head[1]

    def advance(self, rows: IndexArray, x: F32) -> F32:
        """Gather, step, scatter, in one compiled call."""
        result: F32 = self._advance(np.asarray(rows, np.int64), x).numpy()
        return result

    def forecast_windows(self, windows: F32) -> F32:
        """The Keras model's forecast after each window."""
        result: F32 = self._window(windows).numpy()
        return result


class KerasOpsBackend:
    """``keras.ops`` only: the same step under the TensorFlow, JAX or torch backend of Keras 3."""

    name = "keras"

    def __init__(self, weights: ForecasterWeights, keras_model: Any | None = None,
                 initial_rows: int = 1024) -> None:
        import keras

        self._keras = keras
        ops = keras.ops
        self.weights = weights
        self.layers = [(ops.convert_to_tensor(w.kernel), ops.convert_to_tensor(w.recurrent),
                        ops.convert_to_tensor(w.bias)) for w in weights.layers]
        self.head = (ops.convert_to_tensor(weights.head_kernel), ops.convert_to_tensor(weights.head_bias))
        self.units = weights.units
        self.model = keras_model
        shape = (len(weights.layers), initial_rows, weights.units)
        self.h: Any = ops.zeros(shape, "float32")
        self.c: Any = ops.zeros(shape, "float32")

    def ensure_rows(self, rows: int) -> None:
        """Grow the state table by doubling."""
        ops = self._keras.ops
        current = int(self.h.shape[1])
        if rows <= current:
            return
        extra = _grown_capacity(current, rows) - current
        pad = ops.zeros((len(self.layers), extra, self.units), "float32")
        self.h = ops.concatenate([self.h, pad], axis=1)
        self.c = ops.concatenate([self.c, pad], axis=1)

    def _scatter(self, table: Any, rows: Any, values: Any) -> Any:
        ops = self._keras.ops
        layer_count = len(self.layers)
        count = int(rows.shape[0])
        layer_ids = ops.repeat(ops.arange(layer_count, dtype="int32"), count)
        row_ids = ops.tile(ops.cast(rows, "int32"), [layer_count])
        index = ops.stack([layer_ids, row_ids], axis=1)
        return ops.scatter_update(table, index, ops.reshape(values, (layer_count * count, self.units)))

    def reset(self, rows: IndexArray) -> None:
        """Zero the rows' states."""
        if len(rows) == 0:
            return
        ops = self._keras.ops
        index = ops.convert_to_tensor(np.asarray(rows, np.int32))
        zeros = ops.zeros((len(self.layers), len(rows), self.units), "float32")
        self.h = self._scatter(self.h, index, zeros)
        self.c = self._scatter(self.c, index, zeros)

    def advance(self, rows: IndexArray, x: F32) -> F32:
        """Gather, step, scatter with keras.ops."""
        ops = self._keras.ops
        index = ops.convert_to_tensor(np.asarray(rows, np.int32))
        inputs = ops.convert_to_tensor(x)
        new_h = []
        new_c = []
        for layer, (kernel, recurrent, bias) in enumerate(self.layers):
            h = ops.take(self.h[layer], index, axis=0)
            c = ops.take(self.c[layer], index, axis=0)
            hidden, cell = lstm_cell(ops, inputs, h, c, kernel, recurrent, bias)
            new_h.append(hidden)
            new_c.append(cell)
            inputs = hidden
        self.h = self._scatter(self.h, index, ops.stack(new_h))
        self.c = self._scatter(self.c, index, ops.stack(new_c))
        forecast = ops.matmul(inputs, self.head[0]) + self.head[1]
        result: F32 = np.asarray(ops.convert_to_numpy(forecast), np.float32)
        return result

    def forecast_windows(self, windows: F32) -> F32:
        """The Keras model's forecast after each window (the model runs on this Keras backend)."""
        if self.model is None:
            raise ValueError("window mode on the keras backend needs the Keras model")
        ops = self._keras.ops
        result: F32 = np.asarray(ops.convert_to_numpy(self.model(windows, training=False)[:, -1]), np.float32)
        return result


def make_backend(name: BackendName, weights: ForecasterWeights, keras_model_loader: Any, *,
                 window: int, initial_rows: int = 1024) -> LSTMBackend:
    """Build a backend by name; ``keras_model_loader()`` is called only by backends that need the model."""
    if name == "numpy":
        return NumpyBackend(weights, initial_rows)
    if name == "tensorflow":
        return TensorflowBackend(weights, keras_model_loader(), window=window, initial_rows=initial_rows)
    if name == "keras":
        return KerasOpsBackend(weights, keras_model_loader(), initial_rows=initial_rows)
    raise ValueError(f"unknown backend {name!r}")
