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

- ``fingerprint``: hash of the field names, dtypes (with byte order) and
  shapes, the channel names, the predictor's model version and the threshold
  method. A snapshot whose fingerprint differs (new model, other window,
  other method) is ignored, never reinterpreted.
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
from collections.abc import Sequence
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
    """The layout of one device's row, and its fingerprint."""

    dtype: np.dtype[np.void]
    table_fields: tuple[str, ...]
    extra_fields: tuple[str, ...]
    fingerprint: str

    @classmethod
    def build(cls, table: SlotTable, extras: ExtraRows | None, identity: dict[str, str]) -> RowSchema:
        """The schema of ``table`` (minus bookkeeping) plus ``extras``.

        Args:
            table: The device slot table.
            extras: Per-slot state outside the table, if any.
            identity: What else must match for a row to mean the same thing
                (model version, threshold method, channels).
        """
        table_fields = tuple(name for name in table.fields if name not in BOOKKEEPING_FIELDS)
        layout: list[tuple[str, str, tuple[int, ...]]] = []
        for name in table_fields:
            array = table[name]
            layout.append((name, array.dtype.str, tuple(array.shape[1:])))
        extra_fields: list[str] = []
        for field in extras.row_fields if extras is not None else ():
            layout.append((field.name, field.dtype.str, field.shape))
            extra_fields.append(field.name)
        dtype = np.dtype([(name, np.dtype(code), shape) for name, code, shape in layout])
        described = json.dumps({"format": FORMAT, "layout": layout, "identity": identity}, sort_keys=True)
        fingerprint = hashlib.sha256(described.encode()).hexdigest()[:16]
        return cls(dtype, table_fields, tuple(extra_fields), fingerprint)

    @property
    def row_bytes(self) -> int:
        """Size of one device's row."""
        return self.dtype.itemsize


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


def row_values(schema: RowSchema, row: bytes) -> dict[str, Any]:
    """Decode one row into ``{field: array}`` (for inspection and tests)."""
    record = np.frombuffer(row, dtype=schema.dtype)[0]
    return {name: np.asarray(record[name]) for name in schema.dtype.names or ()}
