"""Compute backends for the forecaster, behind one interface.

Every backend holds a *state table* on its compute device: one row per
device, each row holding ``states_per_row`` LSTM states that read the same
input (the stateful predictor keeps two staggered states per device). It
offers two operations, each one call per micro-batch:

- ``advance(rows, x, restart)``: gather the rows' states, zero those marked
  in ``restart``, run one LSTM step of every state on the normalised inputs
  ``x``, scatter the states back, return the forecasts;
- ``forecast_windows(windows)``: window mode, the model's forecast after each
  window from zero state.

Backends: ``numpy`` (from exported weights; never imports TensorFlow),
``tensorflow`` (compiled ``tf.function``; the window path calls the Keras
model itself), ``keras`` (``keras.ops`` only, so it runs under the JAX or
torch backend of Keras 3, on a GPU where there is one).
"""

from __future__ import annotations

import abc
import functools
import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from models.weights import F32, ForecasterWeights, PackedLSTM

BackendName = Literal["numpy", "tensorflow", "keras"]
IndexArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class RowField:
    """One per-row array of a backend's state table, as state snapshots carry it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]


class LSTMBackend(Protocol):
    """A state table plus the two batched operations.

    Each backend also reads and writes its own rows for state snapshots
    (``row_fields``, ``read_rows``, ``write_rows``): the field names and shapes
    enter the snapshot fingerprint, so a snapshot taken under one table
    layout is never read under another.
    """

    name: str
    states_per_row: int

    @property
    def row_fields(self) -> tuple[RowField, ...]:
        """What each row of the state table holds."""
        ...

    def read_rows(self, rows: IndexArray) -> dict[str, npt.NDArray[Any]]:
        """Each field's values for ``rows``, shape ``(len(rows), *field.shape)`` (a copy)."""
        ...

    def write_rows(self, rows: IndexArray, values: dict[str, npt.NDArray[Any]]) -> None:
        """Set each field of ``rows`` (the table grows to hold them)."""
        ...

    def ensure_rows(self, rows: int) -> None:
        """Make room for at least ``rows`` rows (new rows start at zero state)."""
        ...

    def reset(self, rows: IndexArray) -> None:
        """Set every state of ``rows`` to zero."""
        ...

    def advance(self, rows: IndexArray, x: F32, restart: BoolArray | None = None) -> F32:
        """One step of every state of distinct ``rows``.

        Args:
            rows: Distinct rows of the state table.
            x: Normalised inputs ``(len(rows), channels)``, read by every state of the row.
            restart: ``(len(rows), states_per_row)``: states set to zero before the step.

        Returns:
            Forecasts ``(len(rows), states_per_row, channels)``.
        """
        ...

    def forecast_windows(self, windows: F32) -> F32:
        """Forecast after each window ``(batch, time, channels)`` from zero state."""
        ...


def row_records(array: npt.NDArray[Any]) -> npt.NDArray[np.void]:
    """A C-contiguous ``array (rows, ...)`` seen as a 1-D array with one opaque item per row.

    numpy gathers and scatters rows of a 1-D array on a fast path, one copy
    per item; a fancy index into the first axis of a multi-dimensional array
    goes element by element (a scatter of 512 rows of 16 bytes: 15 us against
    2 us). Writes through the view land in ``array``.

    >>> table = np.zeros((4, 2), np.float32)
    >>> records = row_records(table)
    >>> records[[3, 1]] = row_records(np.array([[1, 2], [3, 4]], np.float32))
    >>> table.tolist()
    [[0.0, 0.0], [3.0, 4.0], [0.0, 0.0], [1.0, 2.0]]
    """
    if not array.flags.c_contiguous:
        # reshape would copy, and writes through the view would be lost.
        raise ValueError("row_records needs a C-contiguous array")
    flat = array.reshape(array.shape[0], math.prod(array.shape[1:]))
    records: npt.NDArray[np.void] = flat.view(_record_dtype(flat.shape[1] * array.itemsize)).reshape(-1)
    return records


@functools.cache
def _record_dtype(size: int) -> np.dtype[np.void]:
    # Building a dtype from a tuple costs more than the view itself (py-spy).
    return np.dtype((np.void, size))


def state_rows(rows: IndexArray, states_per_row: int) -> npt.NDArray[np.int64]:
    """Rows of a one-state-per-row table holding the states of ``rows``, row by row.

    >>> state_rows(np.array([0, 5]), 2).tolist()
    [0, 1, 10, 11]
    """
    index: npt.NDArray[np.int64] = (np.asarray(rows, np.int64)[:, None] * states_per_row
                                    + np.arange(states_per_row, dtype=np.int64)).reshape(-1)
    return index


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


# The numpy backend steps a larger batch in chunks of this many rows: its
# scratch (about 1 KiB per state) is sized for the largest chunk and
# kept, so an occasional huge batch (start-up, catch-up) does not pin hundreds
# of MiB; the per-chunk Python overhead is a few percent at this size.
MAX_CHUNK_ROWS = 4096


# Rows a backend with reserved rows initialises per growth step (as many as one
# full micro-batch of new devices: the first touch of fresh pages is the cost);
# see streamer's SlotTable.
RESERVED_GROWTH_ROWS = 4_096


def _grown_capacity(current: int, rows: int) -> int:
    capacity = max(current, 1)
    while capacity < rows:
        capacity *= 2
    return capacity


class NumpyBackend:
    """The LSTM step in numpy from exported weights: for CPUs and edge nodes.

    The state table ``state`` is a :class:`~models.weights.PackedLSTM` state
    block ``(rows, states_per_row, width)``: a row's states are one contiguous
    stretch, so a call gathers each row with one copy (the gather and scatter
    are bound by memory latency, not arithmetic).
    """

    name = "numpy"

    def __init__(self, weights: ForecasterWeights, initial_rows: int = 1024, states_per_row: int = 1,
                 reserve_rows: int | None = None) -> None:
        """``reserve_rows``: rows set aside up front (untouched memory): growth up to them copies nothing."""
        # The step's matrix products are small (batch x 34 x 128): a second
        # BLAS thread costs more in hand-offs than it saves, and under CPU
        # contention it made throughput swing from 97K to 645K points/s
        # (measured with `streamer bench model`). One thread is steady.
        threadpool_limits(limits=1, user_api="blas")
        self.weights = weights
        self.states_per_row = states_per_row
        self.packed = PackedLSTM(weights)
        # The first `initial_rows` rows of the block are at zero state; the rest is untouched memory.
        self._block = self._reserve(max(initial_rows, reserve_rows or initial_rows))
        self._block[:initial_rows] = self.packed.zero_row
        self.state = self._block[:initial_rows]
        self._records = row_records(self.state)
        self._gathered: F32 | None = None
        self._gathered_records = self._records[:0]

    def _reserve(self, rows: int) -> F32:
        try:
            return np.empty(self.packed.state_shape(rows, self.states_per_row), np.float32)
        except MemoryError:  # no room to set aside: grow by doubling
            return np.empty(self.packed.state_shape(0, self.states_per_row), np.float32)

    def ensure_rows(self, rows: int) -> None:
        """Grow the state table: a bounded step into the reserved rows (no copy), or by doubling past them."""
        current = self.state.shape[0]
        if rows <= current:
            return
        reserved = self._block.shape[0]
        if rows <= reserved:
            grown_rows = min(reserved, max(rows, current + RESERVED_GROWTH_ROWS))
            self._block[current:grown_rows] = self.packed.zero_row
            self.state = self._block[:grown_rows]
        else:
            grown = self.packed.zero_state(_grown_capacity(current, rows), self.states_per_row)
            grown[:current] = self.state
            self._block = self.state = grown
        self._records = row_records(self.state)

    @property
    def row_fields(self) -> tuple[RowField, ...]:
        """One field: the row of the packed state block."""
        return (RowField("lstm_packed_state", tuple(int(n) for n in self.state.shape[1:]), self.state.dtype),)

    def read_rows(self, rows: IndexArray) -> dict[str, npt.NDArray[Any]]:
        """Each row of the state block."""
        if len(rows):
            self.ensure_rows(int(rows.max()) + 1)
        return {"lstm_packed_state": self.state[rows].copy()}

    def write_rows(self, rows: IndexArray, values: dict[str, npt.NDArray[Any]]) -> None:
        """Set each row of the state block."""
        if not len(rows):
            return
        self.ensure_rows(int(rows.max()) + 1)
        self.state[rows] = values["lstm_packed_state"]

    def reset(self, rows: IndexArray) -> None:
        """Zero the rows' states."""
        self.state[rows] = self.packed.zero_row

    def advance(self, rows: IndexArray, x: F32, restart: BoolArray | None = None) -> F32:
        """Gather, step, scatter; a large batch in chunks, so the scratch stays small."""
        if len(rows) > MAX_CHUNK_ROWS:
            return np.concatenate([
                self.advance(rows[start:start + MAX_CHUNK_ROWS], x[start:start + MAX_CHUNK_ROWS],
                             None if restart is None else restart[start:start + MAX_CHUNK_ROWS])
                for start in range(0, len(rows), MAX_CHUNK_ROWS)])
        gathered = self.packed.state_buffer(len(rows), self.states_per_row)
        if gathered is not self._gathered:
            self._gathered, self._gathered_records = gathered, row_records(gathered)
        gathered_records = self._gathered_records
        # "wrap" skips take's bounds check and its copy through a temporary;
        # a row past the table still fails, in the scatter below.
        self._records.take(rows, out=gathered_records, mode="wrap")
        forecast = self.packed.advance(gathered, x, restart)
        self._records[rows] = gathered_records
        return forecast

    def forecast_windows(self, windows: F32) -> F32:
        """Window mode in numpy."""
        return self.packed.forecast_windows(windows)


class LayeredStateRows(abc.ABC):
    """Snapshot rows of ``h`` / ``c`` tables ``(layers, rows * states_per_row, units)``.

    Fields ``lstm_state_h`` and ``lstm_state_c``, ``(states_per_row, layers,
    units)`` per row. The tables are copied through host memory, which is fine
    for the periodic snapshot and the rare restore; a backend stores a changed
    table back with ``_store_table``.
    """

    _TABLES = ("h", "c")
    states_per_row: int
    h: Any
    c: Any

    @abc.abstractmethod
    def ensure_rows(self, rows: int) -> None:
        """Make room for at least ``rows`` rows."""

    @abc.abstractmethod
    def _host_table(self, table: Any) -> npt.NDArray[Any]:
        """``table`` as a numpy array."""

    @abc.abstractmethod
    def _store_table(self, name: str, host: npt.NDArray[np.float32]) -> None:
        """Replace the contents of table ``name`` with ``host``."""

    @property
    def row_fields(self) -> tuple[RowField, ...]:
        """``lstm_state_h`` and ``lstm_state_c``."""
        layers, _, units = (int(n) for n in self.h.shape)
        shape = (self.states_per_row, layers, units)
        return tuple(RowField(f"lstm_state_{name}", shape, np.dtype(np.float32)) for name in self._TABLES)

    def read_rows(self, rows: IndexArray) -> dict[str, npt.NDArray[Any]]:
        """Each row's states, ``(len(rows), states_per_row, layers, units)``."""
        if len(rows):
            self.ensure_rows(int(rows.max()) + 1)
        states = state_rows(rows, self.states_per_row)
        out: dict[str, npt.NDArray[Any]] = {}
        for name in self._TABLES:
            table = self._host_table(getattr(self, name))
            layers, units = table.shape[0], table.shape[2]
            picked = table[:, states].reshape(layers, len(rows), self.states_per_row, units)
            out[f"lstm_state_{name}"] = np.ascontiguousarray(picked.transpose(1, 2, 0, 3), dtype=np.float32)
        return out

    def write_rows(self, rows: IndexArray, values: dict[str, npt.NDArray[Any]]) -> None:
        """Set each row's states."""
        if not len(rows):
            return
        self.ensure_rows(int(rows.max()) + 1)
        states = state_rows(rows, self.states_per_row)
        for name in self._TABLES:
            state = np.asarray(values[f"lstm_state_{name}"], np.float32)  # (n, states, layers, units)
            layers, units = state.shape[2], state.shape[3]
            host = self._host_table(getattr(self, name)).copy()
            host[:, states] = state.transpose(2, 0, 1, 3).reshape(layers, len(states), units)
            self._store_table(name, host)


class TensorflowBackend(LayeredStateRows):
    """Compiled TensorFlow: state in ``tf.Variable`` tables, step and window as ``tf.function``.

    The variables hold one state per table row (``h``, ``c``: ``(layers,
    rows * states_per_row, units)``); :func:`state_rows` maps rows to them.
    """

    name = "tensorflow"

    def __init__(self, weights: ForecasterWeights, keras_model: Any, *, window: int,
                 jit_compile: bool = False, initial_rows: int = 1024, states_per_row: int = 1) -> None:
        from models.tf_runtime import load_tensorflow

        tf = load_tensorflow()

        self._tf = tf
        self.weights = weights
        self.states_per_row = states_per_row
        self.layers = [(tf.constant(w.kernel), tf.constant(w.recurrent), tf.constant(w.bias))
                       for w in weights.layers]
        self.head = (tf.constant(weights.head_kernel), tf.constant(weights.head_bias))
        self.units = weights.units
        self.h: Any = None
        self.c: Any = None
        self._allocate(initial_rows * states_per_row)
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
        needed = rows * self.states_per_row
        if needed > current:
            self._allocate(_grown_capacity(current, needed))
            # The compiled step captured the old variables: trace it again.
            self._advance = self._tf.function(
                self._advance_graph, jit_compile=False, reduce_retracing=True,
                input_signature=[self._tf.TensorSpec([None], self._tf.int64),
                                 self._tf.TensorSpec([None, self.weights.channels], self._tf.float32)],
            )

    def _host_table(self, table: Any) -> npt.NDArray[Any]:
        return np.asarray(table.numpy())

    def _store_table(self, name: str, host: npt.NDArray[np.float32]) -> None:
        getattr(self, name).assign(host)  # a tf.Variable: the compiled step keeps reading it

    def reset(self, rows: IndexArray) -> None:
        """Zero the rows' states."""
        self._reset_states(state_rows(rows, self.states_per_row))

    def _reset_states(self, rows: npt.NDArray[np.int64]) -> None:
        if len(rows) == 0:
            return
        tf = self._tf
        index = tf.constant(rows[:, None])
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

    def advance(self, rows: IndexArray, x: F32, restart: BoolArray | None = None) -> F32:
        """Gather, step, scatter, in one compiled call (restarts first, as a reset)."""
        states = state_rows(rows, self.states_per_row)
        if restart is not None:
            self._reset_states(states[np.asarray(restart).reshape(-1)])
        inputs = np.repeat(x, self.states_per_row, axis=0) if self.states_per_row > 1 else x
        result: F32 = self._advance(states, inputs).numpy()
        return result.reshape(len(rows), self.states_per_row, self.weights.channels)

    def forecast_windows(self, windows: F32) -> F32:
        """The Keras model's forecast after each window."""
        result: F32 = self._window(windows).numpy()
        return result


class KerasOpsBackend(LayeredStateRows):
    """``keras.ops`` only: the same step under the TensorFlow, JAX or torch backend of Keras 3."""

    name = "keras"

    def __init__(self, weights: ForecasterWeights, keras_model: Any | None = None,
                 initial_rows: int = 1024, states_per_row: int = 1) -> None:
        from models.tf_runtime import load_keras

        keras = load_keras()

        self._keras = keras
        ops = keras.ops
        self.weights = weights
        self.states_per_row = states_per_row
        self.layers = [(ops.convert_to_tensor(w.kernel), ops.convert_to_tensor(w.recurrent),
                        ops.convert_to_tensor(w.bias)) for w in weights.layers]
        self.head = (ops.convert_to_tensor(weights.head_kernel), ops.convert_to_tensor(weights.head_bias))
        self.units = weights.units
        self.model = keras_model
        # One state per row of these tables, as in TensorflowBackend.
        shape = (len(weights.layers), initial_rows * states_per_row, weights.units)
        self.h: Any = ops.zeros(shape, "float32")
        self.c: Any = ops.zeros(shape, "float32")
        # Under Keras' JAX backend each keras.ops call is dispatched on its own
        # and every scatter copies the whole table: measured on the CPU, 3.6K
        # readings/s at 1K devices. The same step compiled once per batch-size
        # bucket (JaxCompiledStep) runs as one program.
        self._compiled = JaxCompiledStep(self) if keras.backend.backend() == "jax" else None

    def ensure_rows(self, rows: int) -> None:
        """Grow the state table by doubling."""
        ops = self._keras.ops
        current = int(self.h.shape[1])
        needed = rows * self.states_per_row
        if needed <= current:
            return
        extra = _grown_capacity(current, needed) - current
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

    def _host_table(self, table: Any) -> npt.NDArray[Any]:
        return np.asarray(self._keras.ops.convert_to_numpy(table))

    def _store_table(self, name: str, host: npt.NDArray[np.float32]) -> None:
        setattr(self, name, self._keras.ops.convert_to_tensor(host))  # keras.ops tensors are immutable

    def reset(self, rows: IndexArray) -> None:
        """Zero the rows' states."""
        self._reset_states(state_rows(rows, self.states_per_row))

    def _reset_states(self, rows: npt.NDArray[np.int64]) -> None:
        if len(rows) == 0:
            return
        ops = self._keras.ops
        index = ops.convert_to_tensor(np.asarray(rows, np.int32))
        zeros = ops.zeros((len(self.layers), len(rows), self.units), "float32")
        self.h = self._scatter(self.h, index, zeros)
        self.c = self._scatter(self.c, index, zeros)

    def advance(self, rows: IndexArray, x: F32, restart: BoolArray | None = None) -> F32:
        """Gather, step, scatter with keras.ops (restarts first, as a reset)."""
        states = state_rows(rows, self.states_per_row)
        if self._compiled is not None:
            stepped = self._compiled.advance(states, np.repeat(x, self.states_per_row, axis=0), restart)
            return stepped.reshape(len(rows), self.states_per_row, self.weights.channels)
        if restart is not None:
            self._reset_states(states[np.asarray(restart).reshape(-1)])
        ops = self._keras.ops
        index = ops.convert_to_tensor(states.astype(np.int32))
        inputs = ops.convert_to_tensor(np.repeat(x, self.states_per_row, axis=0))
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
        return result.reshape(len(rows), self.states_per_row, self.weights.channels)

    def forecast_windows(self, windows: F32) -> F32:
        """The Keras model's forecast after each window (the model runs on this Keras backend)."""
        if self.model is None:
            raise ValueError("window mode on the keras backend needs the Keras model")
        ops = self._keras.ops
        result: F32 = np.asarray(ops.convert_to_numpy(self.model(windows, training=False)[:, -1]), np.float32)
        return result


# Batches are padded to the next power of two (at least this many state rows),
# so the compiled step is traced for a handful of shapes, not one per size.
MIN_COMPILED_ROWS = 64


class JaxCompiledStep:
    """:class:`KerasOpsBackend`'s gather-step-scatter as one ``jax.jit`` program.

    The program takes the whole ``h``/``c`` tables and returns them updated,
    so on an accelerator the fleet's LSTM state stays in device memory (the
    tables are donated: updated in place where the platform supports it).
    Padding repeats the last real state row with its own input and restart
    flag: the copies compute the identical result, so scattering them
    changes nothing.
    """

    def __init__(self, backend: KerasOpsBackend) -> None:
        import jax

        self.backend = backend
        donate = (0, 1) if jax.default_backend() != "cpu" else ()  # the CPU client cannot donate
        self._step = jax.jit(self._pure_step, donate_argnums=donate)

    def _pure_step(self, h: Any, c: Any, index: Any, inputs: Any, reset: Any) -> tuple[Any, Any, Any]:
        import jax.numpy as jnp

        ops = self.backend._keras.ops
        new_h = []
        new_c = []
        for layer, (kernel, recurrent, bias) in enumerate(self.backend.layers):
            state_h = jnp.where(reset[:, None], 0.0, jnp.take(h[layer], index, axis=0))
            state_c = jnp.where(reset[:, None], 0.0, jnp.take(c[layer], index, axis=0))
            hidden, cell = lstm_cell(ops, inputs, state_h, state_c, kernel, recurrent, bias)
            new_h.append(hidden)
            new_c.append(cell)
            inputs = hidden
        head_kernel, head_bias = self.backend.head
        forecast = jnp.matmul(inputs, head_kernel) + head_bias
        return h.at[:, index].set(jnp.stack(new_h)), c.at[:, index].set(jnp.stack(new_c)), forecast

    def advance(self, states: npt.NDArray[np.int64], inputs: F32, restart: BoolArray | None) -> F32:
        """Step ``states`` (state-table rows) on ``inputs`` (one row each); the forecasts."""
        count = len(states)
        reset = (np.zeros(count, bool) if restart is None else np.asarray(restart, bool).reshape(-1))
        size = max(MIN_COMPILED_ROWS, 1 << max(count - 1, 0).bit_length())
        pad = size - count
        index = np.concatenate([states, np.repeat(states[-1:], pad)]).astype(np.int32)
        padded_inputs = np.concatenate([inputs, np.repeat(inputs[-1:], pad, axis=0)]).astype(np.float32)
        padded_reset = np.concatenate([reset, np.repeat(reset[-1:], pad)])
        backend = self.backend
        backend.h, backend.c, forecast = self._step(backend.h, backend.c, index, padded_inputs, padded_reset)
        result: F32 = np.asarray(forecast, np.float32)[:count]
        return result


def make_backend(name: BackendName, weights: ForecasterWeights, keras_model_loader: Any, *,
                 window: int, initial_rows: int = 1024, states_per_row: int = 1,
                 reserve_rows: int | None = None) -> LSTMBackend:
    """Build a backend by name; ``keras_model_loader()`` is called only by backends that need the model.

    ``reserve_rows``: the numpy backend sets that many rows aside so that growth copies nothing; the
    others keep their tables on an accelerator and grow by doubling.
    """
    if name == "numpy":
        return NumpyBackend(weights, initial_rows, states_per_row, reserve_rows)
    if name == "tensorflow":
        return TensorflowBackend(weights, keras_model_loader(), window=window, initial_rows=initial_rows,
                                 states_per_row=states_per_row)
    if name == "keras":
        return KerasOpsBackend(weights, keras_model_loader(), initial_rows=initial_rows,
                               states_per_row=states_per_row)
    raise ValueError(f"unknown backend {name!r}")
