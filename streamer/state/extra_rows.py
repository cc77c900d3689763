"""Per-device state kept outside the slot table, made snapshottable.

Everything a device's detector knows lives in the slot table, except the
LSTM states of the ``stateful`` predictor: its compute backend keeps them in
its own table, indexed by slot, on the backend's device. Each backend reads
and writes its own rows (:class:`models.backends.LSTMBackend`), so snapshots
carry them as if they were more slot-table fields; this module names that
seam for the state layer. The field names and shapes enter the snapshot
fingerprint, so a snapshot taken under one layout is never read under
another; the snapshot round-trip tests catch a layout change.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from models.backends import RowField

IndexArray = npt.NDArray[np.intp]

__all__ = ["ExtraRows", "RowField"]


class ExtraRows(Protocol):
    """Per-slot state outside the slot table (row ``s`` belongs to slot ``s``)."""

    @property
    def row_fields(self) -> tuple[RowField, ...]:
        """What each slot holds."""
        ...

    def read_rows(self, rows: IndexArray) -> dict[str, npt.NDArray[Any]]:
        """Each field's values for ``rows``, shape ``(len(rows), *field.shape)``."""
        ...

    def write_rows(self, rows: IndexArray, values: dict[str, npt.NDArray[Any]]) -> None:
        """Set each field of ``rows``."""
        ...
