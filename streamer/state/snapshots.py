"""Per-device snapshots: a device's whole detector state as one record.

A device's state is its row across every slot-table field (ring buffer,
predictor, threshold, alert episode) plus the rows a component keeps outside
the table (:mod:`streamer.state.extra_rows`). The row layout is a packed
numpy structured dtype built from those fields, so taking and restoring many
devices is one vectorised copy per field, and each device's row is a fixed
number of bytes.

Wire format of one snapshot (record value; the key is the device id),
msgpack via msgspec::

    [format, fingerprint, partition, offset, taken_at_ms, row]

- ``fingerprint``: ``<base>.<model>`` (:class:`RowSchema`): hashes of the
  field names, dtypes (with byte order) and shapes, the channel names and
  the threshold method (base), and of the forecaster's fields and model
  version (model). A snapshot whose base differs (other window, other
  method) is ignored, never reinterpreted; one whose model part alone
  differs (the model was swapped) gives its base, and the forecaster state
  is rebuilt from the device's ring buffer.
- ``partition``/``offset``: the input partition of the device and the offset
  its state reflects: every record of that partition *before* ``offset`` has
  been applied, none after.
- ``row``: the raw row bytes.

Bookkeeping fields (:data:`~streamer.state.registry.BOOKKEEPING_FIELDS`) are
not state and are not stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from streamer.state.extra_rows import ExtraRows
from streamer.state.registry import BOOKKEEPING_FIELDS
from streamer.state.slot_table import SlotTable

IndexArray = npt.NDArray[np.intp]
# Version of the envelope below; part of the fingerprint too.
FORMAT = 1


class Snapshot(msgspec.Struct, array_like=True, frozen=True):
    """One device's state as stored on the state topic."""

    format: int
    fingerprint: str
    partition: int
    offset: int  # the device reflects every record of `partition` before this offset
    taken_at_ms: int
    row: bytes


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Snapshot)


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """Record value of a snapshot."""
    return _encoder.encode(snapshot)


def decode_snapshot(data: bytes) -> Snapshot | None:
    """Parse a record value; None when it is not a snapshot this version understands."""
    try:
        snapshot = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return snapshot if snapshot.format == FORMAT else None


@dataclass(frozen=True)
class RowSchema:
    """The layout of one device's row, and its fingerprint.

    A row is the *base* (every kept slot-table field but the forecaster's:
    ring buffer, threshold, episodes, operator adjustments) followed by the
    *model* part (the forecaster's slot-table fields and its per-slot state
    outside the table). The fingerprint is ``<base>.<model>``, one hash each,
    so a snapshot taken under another model still yields its base
    (:meth:`base_usable`): a device restored after a model swap keeps its
    history and rebuilds only its forecaster state.
    """

    dtype: np.dtype[np.void]
    table_fields: tuple[str, ...]
    extra_fields: tuple[str, ...]
    fingerprint: str
    base_dtype: np.dtype[np.void]
    base_fields: tuple[str, ...]

    @classmethod
    def build(cls, table: SlotTable, extras: ExtraRows | None, identity: dict[str, str],
              model_fields: Collection[str] = ()) -> RowSchema:
        """The schema of ``table`` (minus bookkeeping and transient fields) plus ``extras``.

        Args:
            table: The device slot table.
            extras: Per-slot state outside the table, if any (the model's).
            identity: What else must match for a row to mean the same thing
                (``model_version`` for the model part; threshold method and
                channels for the base).
            model_fields: The slot-table fields that belong to the forecaster.
        """
        stored = [name for name in table.stored_fields if name not in BOOKKEEPING_FIELDS]
        # Sorted: a layout must not depend on the order components were built in
        # (a swapped-in model declares its fields after every other component).
        base_fields = tuple(sorted(name for name in stored if name not in model_fields))
        model_table_fields = tuple(sorted(name for name in stored if name in model_fields))
        table_fields = base_fields + model_table_fields
        layout: list[tuple[str, str, tuple[int, ...]]] = []
        for name in table_fields:
            array = table[name]
            layout.append((name, array.dtype.str, tuple(array.shape[1:])))
        extra_fields: list[str] = []
        for row_field in extras.row_fields if extras is not None else ():
            layout.append((row_field.name, row_field.dtype.str, row_field.shape))
            extra_fields.append(row_field.name)
        dtype = np.dtype([(name, np.dtype(code), shape) for name, code, shape in layout])
        base_layout = layout[:len(base_fields)]
        base_dtype = np.dtype([(name, np.dtype(code), shape) for name, code, shape in base_layout])
        base_identity = {key: value for key, value in identity.items() if key != "model_version"}
        model_identity = {key: value for key, value in identity.items() if key == "model_version"}
        fingerprint = (_digest({"format": FORMAT, "layout": base_layout, "identity": base_identity}) + "."
                       + _digest({"layout": layout[len(base_fields):], "identity": model_identity}))
        return cls(dtype, table_fields, tuple(extra_fields), fingerprint, base_dtype, base_fields)

    @property
    def row_bytes(self) -> int:
        """Size of one device's row."""
        return self.dtype.itemsize

    @property
    def base_bytes(self) -> int:
        """Size of the base part at the start of a row."""
        return self.base_dtype.itemsize

    @property
    def base_fingerprint(self) -> str:
        """The fingerprint of the base part alone."""
        return base_of(self.fingerprint)

    def base_usable(self, snapshot: Snapshot) -> bool:
        """Whether ``snapshot`` (of another model) still carries a base this schema can read."""
        return base_of(snapshot.fingerprint) == self.base_fingerprint and len(snapshot.row) >= self.base_bytes


def base_of(fingerprint: str) -> str:
    """The base part of a row fingerprint (see :class:`RowSchema`)."""
    return fingerprint.split(".", 1)[0]


def _digest(described: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def take_rows(table: SlotTable, extras: ExtraRows | None, schema: RowSchema,
              slots: IndexArray) -> list[bytes]:
    """The row bytes of each slot, in ``slots`` order."""
    rows = np.zeros(len(slots), dtype=schema.dtype)
    for name in schema.table_fields:
        rows[name] = table[name][slots]
    if extras is not None and schema.extra_fields:
        for name, values in extras.read_rows(slots).items():
            rows[name] = values
    blob = rows.tobytes()
    size = schema.row_bytes
    return [blob[i * size:(i + 1) * size] for i in range(len(slots))]


def put_rows(table: SlotTable, extras: ExtraRows | None, schema: RowSchema, slots: IndexArray,
             rows: Sequence[bytes]) -> None:
    """Write row bytes (each exactly ``schema.row_bytes`` long) into ``slots``."""
    if not len(slots):
        return
    array = np.frombuffer(b"".join(rows), dtype=schema.dtype)
    if len(array) != len(slots):
        raise ValueError(f"{len(rows)} rows of the wrong size for {len(slots)} slots")
    for name in schema.table_fields:
        table[name][slots] = array[name]
    if extras is not None and schema.extra_fields:
        extras.write_rows(slots, {name: array[name] for name in schema.extra_fields})


def put_base_rows(table: SlotTable, schema: RowSchema, slots: IndexArray, rows: Sequence[bytes]) -> None:
    """Write the base part of rows taken under another model (see :meth:`RowSchema.base_usable`)."""
    if not len(slots):
        return
    size = schema.base_bytes
    array = np.frombuffer(b"".join(row[:size] for row in rows), dtype=schema.base_dtype)
    for name in schema.base_fields:
        table[name][slots] = array[name]


def row_values(schema: RowSchema, row: bytes) -> dict[str, Any]:
    """Decode one row into ``{field: array}`` (for inspection and tests)."""
    record = np.frombuffer(row, dtype=schema.dtype)[0]
    return {name: np.asarray(record[name]) for name in schema.dtype.names or ()}
