"""Per-device state kept outside the slot table, made snapshottable.

Everything a device's detector knows lives in the slot table, except the
LSTM states of the ``stateful`` predictor: its compute backend keeps them in
its own table, indexed by slot, on the backend's device. This module reads
and writes those per slot so snapshots carry them as if they were more
slot-table fields. Two layouts are understood:

- a numpy ``state`` block ``(rows, states, width)``, row = slot (the numpy
  backend's packed state): one field ``lstm_packed_state``;
- ``h`` and ``c`` tables ``(layers, rows * states, units)``, rows
  ``slot * states + k`` (the TensorFlow and Keras backends): fields
  ``lstm_state_h`` and ``lstm_state_c``, ``(states, layers, units)``.

The field names and shapes enter the snapshot fingerprint, so a snapshot
taken under one layout is never read under another. A backend with a layout
not listed here is refused at start (:class:`TypeError`) rather than
restored wrong; the snapshot round-trip tests catch a layout change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

IndexArray = npt.NDArray[np.intp]
# States per slot of the staggered stateful predictor, for backends that do
# not say (`states_per_row`).
DEFAULT_STATES_PER_SLOT = 2


@dataclass(frozen=True)
class ExtraField:
    """One per-slot array held outside the slot table."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]


class ExtraRows(Protocol):
    """Per-slot state outside the slot table."""

    @property
    def fields(self) -> tuple[ExtraField, ...]:
        """What each slot holds."""
        ...

    def read(self, slots: IndexArray) -> dict[str, npt.NDArray[Any]]:
        """Each field's values for ``slots``, shape ``(len(slots), *field.shape)``."""
        ...

    def write(self, slots: IndexArray, values: dict[str, npt.NDArray[Any]]) -> None:
        """Set each field of ``slots``."""
        ...


def extra_rows_of(predictor: object) -> ExtraRows | None:
    """The out-of-table state of ``predictor``; None when it keeps everything in the slot table.

    Raises:
        TypeError: The predictor keeps per-slot state in a layout this module
            does not know, so it could not be snapshotted faithfully.
    """
    if getattr(predictor, "mode", None) != "stateful":
        return None
    backend = getattr(predictor, "backend", None)
    if isinstance(getattr(backend, "state", None), np.ndarray):
        return PackedStateRows(backend)
    if hasattr(backend, "h") and hasattr(backend, "c"):
        return LayeredStateRows(backend, int(getattr(backend, "states_per_row", DEFAULT_STATES_PER_SLOT)))
    raise TypeError(f"cannot snapshot the LSTM state of backend {type(backend).__name__}; "
                    "set state.enabled: false")


class PackedStateRows:
    """A numpy ``state`` block, one row per slot, as field ``lstm_packed_state``."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        state: npt.NDArray[Any] = backend.state
        self.fields = (ExtraField("lstm_packed_state", tuple(int(n) for n in state.shape[1:]), state.dtype),)

    def read(self, slots: IndexArray) -> dict[str, npt.NDArray[Any]]:
        """Each slot's state block row."""
        if len(slots):
            self.backend.ensure_rows(int(slots.max()) + 1)
        return {self.fields[0].name: self.backend.state[slots].copy()}

    def write(self, slots: IndexArray, values: dict[str, npt.NDArray[Any]]) -> None:
        """Set each slot's state block row."""
        if not len(slots):
            return
        self.backend.ensure_rows(int(slots.max()) + 1)
        self.backend.state[slots] = values[self.fields[0].name]


class LayeredStateRows:
    """``h`` / ``c`` tables with ``states`` consecutive rows per slot, as ``lstm_state_h`` / ``_c``.

    Works in place on numpy tables; ``tf.Variable`` tables and immutable
    ``keras.ops`` tensors are copied through host memory, which is fine for
    the periodic snapshot and the rare restore.
    """

    _TABLES = ("h", "c")

    def __init__(self, backend: Any, states: int) -> None:
        self.backend = backend
        self.states = states
        layers, _, units = (int(n) for n in backend.h.shape)
        shape = (states, layers, units)
        self.fields = tuple(ExtraField(f"lstm_state_{name}", shape, np.dtype(np.float32))
                            for name in self._TABLES)

    def _rows(self, slots: IndexArray) -> IndexArray:
        return (self.states * np.asarray(slots, np.intp)[:, None] + np.arange(self.states)).ravel()

    def _ensure(self, slots: IndexArray) -> None:
        if not len(slots):
            return
        # Backends that know `states_per_row` count slots; older ones count state rows.
        per = 1 if hasattr(self.backend, "states_per_row") else self.states
        self.backend.ensure_rows(per * (int(slots.max()) + 1))

    def read(self, slots: IndexArray) -> dict[str, npt.NDArray[Any]]:
        """Each slot's states, ``(n, states, layers, units)``."""
        self._ensure(slots)
        rows = self._rows(slots)
        out: dict[str, npt.NDArray[Any]] = {}
        for name, field in zip(self._TABLES, self.fields, strict=True):
            table = _host(getattr(self.backend, name))
            layers, units = table.shape[0], table.shape[2]
            picked = table[:, rows].reshape(layers, len(slots), self.states, units)
            out[field.name] = np.ascontiguousarray(picked.transpose(1, 2, 0, 3), dtype=np.float32)
        return out

    def write(self, slots: IndexArray, values: dict[str, npt.NDArray[Any]]) -> None:
        """Set each slot's states."""
        if not len(slots):
            return
        self._ensure(slots)
        rows = self._rows(slots)
        for name, field in zip(self._TABLES, self.fields, strict=True):
            table = getattr(self.backend, name)
            state = np.asarray(values[field.name], np.float32)  # (n, states, layers, units)
            layers, units = state.shape[2], state.shape[3]
            flat = state.transpose(2, 0, 1, 3).reshape(layers, len(rows), units)
            if isinstance(table, np.ndarray):
                table[:, rows] = flat
                continue
            host = _host(table).copy()
            host[:, rows] = flat
            if hasattr(table, "assign"):  # tf.Variable
                table.assign(host)
            else:  # an immutable keras.ops tensor: replace it
                import keras

                setattr(self.backend, name, keras.ops.convert_to_tensor(host))


def _host(table: Any) -> npt.NDArray[Any]:
    """A backend table as a numpy array (no copy for a numpy table)."""
    if isinstance(table, np.ndarray):
        return table
    if hasattr(table, "numpy"):
        return np.asarray(table.numpy())
    import keras

    return np.asarray(keras.ops.convert_to_numpy(table))
