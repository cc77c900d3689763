"""Training data: per-device series from CSV or Parquet, and their fingerprint.

A training file holds one reading per row::

    timestamp   epoch milliseconds, or ISO-8601 (string or timestamp type;
                a time without an offset is taken as UTC)
    device_id   which device (the column name is configurable; without the
                column the whole file is one device, named after the file)
    ...         one numeric column per channel

Rows are grouped by device and sorted by time. Rows with a missing or
non-finite value are dropped: the daemon rejects such readings too, so the
model never sees them. The fingerprint hashes exactly what training reads
(device ids, channel names, values in time order), so a bundle records which
data it was trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

FloatArray = npt.NDArray[np.float64]

TIMESTAMP_COLUMN = "timestamp"
DEFAULT_DEVICE_COLUMN = "device_id"
_NS_PER_MS = 1_000_000
# Ticks of each Arrow timestamp unit per millisecond (seconds are multiplied instead).
_TICKS_PER_MS = {"ms": 1, "us": 1_000, "ns": 1_000_000}


@dataclass(frozen=True)
class TrainingData:
    """Per-device series ``(time, channels)`` in time order, sorted by device id."""

    series: dict[str, FloatArray]
    channels: tuple[str, ...]
    fingerprint: str
    # Event times (epoch ms) per device, aligned with ``series``; empty when
    # the data came from arrays without times.
    timestamps: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """Readings over all devices."""
        return sum(len(values) for values in self.series.values())


def from_arrays(series: Mapping[str, FloatArray], channels: Sequence[str]) -> TrainingData:
    """Training data from in-memory series (already in time order).

    >>> data = from_arrays({"b": np.ones((3, 1)), "a": np.zeros((2, 1))}, ["value"])
    >>> list(data.series), data.steps, len(data.fingerprint)
    (['a', 'b'], 5, 64)
    """
    channels = tuple(channels)
    ordered: dict[str, FloatArray] = {}
    for device in sorted(series):
        values = np.ascontiguousarray(series[device], dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(channels):
            raise ValueError(f"device {device!r}: expected (time, {len(channels)}) values, "
                             f"got {values.shape}")
        ordered[device] = values
    return TrainingData(ordered, channels, fingerprint(ordered, channels))


def fingerprint(series: Mapping[str, FloatArray], channels: Sequence[str]) -> str:
    """SHA-256 of the channel names, device ids and values, in a fixed order.

    >>> a = fingerprint({"d": np.array([[1.0], [2.0]])}, ["value"])
    >>> a == fingerprint({"d": np.array([[1.0], [2.0]])}, ["value"])
    True
    >>> a == fingerprint({"d": np.array([[1.0], [2.5]])}, ["value"])
    False
    """
    digest = hashlib.sha256(json.dumps(list(channels)).encode())
    for device in sorted(series):
        values = np.ascontiguousarray(series[device], dtype="<f8")
        # Length-prefixed id and shape: no two different inputs share a byte stream.
        name = device.encode()
        digest.update(len(name).to_bytes(8, "little") + name)
        digest.update(np.asarray(values.shape, dtype="<i8").tobytes())
        digest.update(values.tobytes())
    return digest.hexdigest()


def load_table(
    path: Path,
    *,
    device_column: str = DEFAULT_DEVICE_COLUMN,
    value_columns: Sequence[str] | None = None,
    timestamp_column: str = TIMESTAMP_COLUMN,
) -> TrainingData:
    """Read a ``.csv`` or ``.parquet`` file into per-device series.

    Args:
        path: The file; its suffix picks the format.
        device_column: Column naming the device. Without it the file is one
            device named after the file's stem.
        value_columns: Channel columns, in order. Default: every numeric
            column other than the timestamp and device columns.
        timestamp_column: Column of event times.

    Raises:
        ValueError: Unknown suffix, missing columns, unparseable timestamps,
            or no usable rows.
    """
    table = _read(path)
    names = table.column_names
    if timestamp_column not in names:
        raise ValueError(f"{path}: no {timestamp_column!r} column (columns: {', '.join(names)})")
    if value_columns is None:
        value_columns = [
            name for name in names
            if name not in (timestamp_column, device_column) and _is_numeric(table.schema.field(name).type)
        ]
        if not value_columns:
            raise ValueError(f"{path}: no numeric value columns (columns: {', '.join(names)})")
    missing = [name for name in value_columns if name not in names]
    if missing:
        raise ValueError(f"{path}: value column(s) not found: {', '.join(missing)}")

    try:
        ts = _epoch_ms(table.column(timestamp_column))
    except ValueError as exc:
        raise ValueError(f"{path}: column {timestamp_column!r}: {exc}") from exc
    columns = []
    for name in value_columns:
        try:
            columns.append(_floats(table.column(name)))
        except ValueError as exc:
            raise ValueError(f"{path}: column {name!r}: {exc}") from exc
    values = np.column_stack(columns)
    if device_column in names:
        devices = np.asarray(table.column(device_column).cast(pa.string()).to_pylist(), dtype=object)
    else:
        devices = np.full(len(ts), path.stem, dtype=object)
    return from_rows(devices, ts, values, value_columns, source=str(path))


def from_rows(
    devices: npt.NDArray[Any] | Sequence[str | None],
    ts_ms: npt.NDArray[np.int64],
    values: FloatArray,
    channels: Sequence[str],
    *,
    source: str = "data",
) -> TrainingData:
    """Group readings (one row each, any order) into per-device series in time order.

    Rows with a missing device or a non-finite value are dropped; rows of a
    device with equal timestamps keep their order.

    >>> data = from_rows(["b", "a", "b"], np.array([2, 5, 1]), np.array([[2.0], [5.0], [1.0]]), ["v"])
    >>> {device: values[:, 0].tolist() for device, values in data.series.items()}
    {'a': [5.0], 'b': [1.0, 2.0]}
    """
    devices = np.asarray(devices, dtype=object)
    values = np.asarray(values, dtype=np.float64).reshape(len(devices), len(channels))
    keep = np.isfinite(values).all(axis=1) & (devices != None)  # noqa: E711  # elementwise on an object array
    ts, values, names = np.asarray(ts_ms)[keep], values[keep], devices[keep].astype(str)
    if len(ts) == 0:
        raise ValueError(f"{source}: no rows with finite values")
    ids, codes = np.unique(names, return_inverse=True)
    # Stable sort by device then time: equal timestamps keep their order.
    order = np.lexsort((ts, codes))
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    # Every id in ``ids`` has at least one row, so the chunks line up with it.
    chunks = np.split(values[order], bounds)
    times = np.split(ts[order].astype(np.int64), bounds)
    data = from_arrays({str(device): chunk for device, chunk in zip(ids, chunks, strict=True)}, channels)
    return dataclasses.replace(
        data, timestamps={str(device): chunk for device, chunk in zip(ids, times, strict=True)})

def _read(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pa_csv.read_csv(path)
    if suffix in (".parquet", ".pq"):
        return pq.read_table(path)
    raise ValueError(f"{path}: unknown format {suffix!r} (expected .csv or .parquet)")


def _is_numeric(type_: Any) -> bool:
    return bool(pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_decimal(type_))


def _floats(column: Any) -> FloatArray:
    if not _is_numeric(column.type):
        raise ValueError(f"type {column.type} is not numeric")
    filled = pc.fill_null(column.cast(pa.float64()), float("nan"))
    result: FloatArray = np.asarray(filled.to_numpy(), dtype=np.float64)
    return result


def _epoch_ms(column: Any) -> npt.NDArray[np.int64]:
    """Epoch milliseconds from numbers (taken as ms), timestamps or ISO-8601 strings."""
    if column.null_count:
        raise ValueError(f"{column.null_count} missing timestamp(s)")
    type_ = column.type
    if pa.types.is_integer(type_):
        return np.asarray(column.cast(pa.int64()).to_numpy(), dtype=np.int64)
    if pa.types.is_floating(type_):
        numbers = np.asarray(column.to_numpy(), dtype=np.float64)
        if not np.isfinite(numbers).all():
            raise ValueError("non-finite timestamp(s)")
        return np.rint(numbers).astype(np.int64)
    if pa.types.is_timestamp(type_):
        raw = np.asarray(column.cast(pa.int64()).to_numpy(), dtype=np.int64)
        return raw * 1000 if type_.unit == "s" else np.floor_divide(raw, _TICKS_PER_MS[type_.unit])
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        # Arrow's parser wants either every string with an offset or none.
        for tz in ("UTC", None):
            try:
                parsed = pc.cast(column, pa.timestamp("ns", tz=tz))
            except pa.ArrowInvalid:
                continue
            return np.floor_divide(np.asarray(parsed.cast(pa.int64()).to_numpy(), dtype=np.int64), _NS_PER_MS)
        return np.asarray([_iso_ms(text) for text in column.to_pylist()], dtype=np.int64)
    raise ValueError(f"unsupported timestamp type {type_}")


def _iso_ms(text: str) -> int:
    """Epoch ms of one ISO-8601 string; no offset means UTC.

    >>> _iso_ms("1970-01-01T00:00:01.5Z"), _iso_ms("1970-01-01 01:00:00+01:00")
    (1500, 0)
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)
