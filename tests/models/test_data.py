"""Training data loading: CSV and Parquet, timestamps, devices, channels, fingerprint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.data import fingerprint, from_arrays, load_table

# Two devices, two channels, rows deliberately out of time order and interleaved.
EPOCH_CSV = """timestamp,device_id,temp,hum,label
1700000000200,b,3.0,30.0,x
1700000000000,a,1.0,10.0,x
1700000000100,b,2.0,20.0,x
1700000000100,a,1.5,15.0,x
1700000000000,b,1.0,10.0,x
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_epoch_ms_groups_by_device_sorts_by_time_and_picks_numeric_channels(tmp_path: Path) -> None:
    data = load_table(_write(tmp_path / "readings.csv", EPOCH_CSV))
    assert data.channels == ("temp", "hum")  # the string column is not a channel
    assert list(data.series) == ["a", "b"]
    np.testing.assert_array_equal(data.series["a"], [[1.0, 10.0], [1.5, 15.0]])
    np.testing.assert_array_equal(data.series["b"], [[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    assert data.series["a"].dtype == np.float64
    assert data.steps == 5


def test_explicit_value_columns_set_channel_order(tmp_path: Path) -> None:
    data = load_table(_write(tmp_path / "readings.csv", EPOCH_CSV), value_columns=["hum"])
    assert data.channels == ("hum",)
    np.testing.assert_array_equal(data.series["b"][:, 0], [10.0, 20.0, 30.0])


def test_iso_timestamps_with_mixed_offsets_sort_by_instant(tmp_path: Path) -> None:
    # 00:30+01:00 is 23:30 UTC the day before, so it comes first; naive times are UTC.
    text = """timestamp,sensor,value
2024-01-01T00:00:00Z,s1,2.0
2024-01-01T00:30:00+01:00,s1,1.0
2024-01-01 00:00:01,s1,3.0
2024-01-01T00:00:00.500Z,s2,5.0
"""
    data = load_table(_write(tmp_path / "iso.csv", text), device_column="sensor")
    np.testing.assert_array_equal(data.series["s1"][:, 0], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(data.series["s2"][:, 0], [5.0])


def test_iso_timestamps_inferred_by_arrow_sort_by_time(tmp_path: Path) -> None:
    text = "timestamp,device_id,value\n2024-01-01T00:00:02Z,a,2.0\n2024-01-01T00:00:01.250Z,a,1.0\n"
    data = load_table(_write(tmp_path / "iso.csv", text))
    np.testing.assert_array_equal(data.series["a"][:, 0], [1.0, 2.0])


def test_without_device_column_the_file_is_one_device(tmp_path: Path) -> None:
    text = "timestamp,value\n2,20.0\n1,10.0\n"
    data = load_table(_write(tmp_path / "pump-7.csv", text))
    assert list(data.series) == ["pump-7"]
    np.testing.assert_array_equal(data.series["pump-7"], [[10.0], [20.0]])


def test_rows_with_missing_or_non_finite_values_are_dropped(tmp_path: Path) -> None:
    text = "timestamp,device_id,value\n1,a,1.0\n2,a,\n3,a,nan\n4,a,4.0\n"
    data = load_table(_write(tmp_path / "gaps.csv", text))
    np.testing.assert_array_equal(data.series["a"][:, 0], [1.0, 4.0])


def test_parquet_with_timestamp_type_matches_the_same_csv(tmp_path: Path) -> None:
    csv = load_table(_write(tmp_path / "readings.csv", EPOCH_CSV))
    table = pa.table({
        # Microsecond timestamps, as pandas and Spark often write them.
        "timestamp": pa.array([1000 * ms for ms in (1700000000200, 1700000000000, 1700000000100,
                                                    1700000000100, 1700000000000)],
                              type=pa.timestamp("us", tz="UTC")),
        "device_id": ["b", "a", "b", "a", "b"],
        "temp": [3.0, 1.0, 2.0, 1.5, 1.0],
        "hum": pa.array([30, 10, 20, 15, 10], type=pa.int32()),  # integer channels are read as floats
    })
    pq.write_table(table, tmp_path / "readings.parquet")
    parquet = load_table(tmp_path / "readings.parquet")
    assert parquet.channels == csv.channels
    assert parquet.series.keys() == csv.series.keys()
    for device in csv.series:
        np.testing.assert_array_equal(parquet.series[device], csv.series[device])
    assert parquet.fingerprint == csv.fingerprint


def test_parquet_with_iso_strings_and_numeric_device_ids(tmp_path: Path) -> None:
    table = pa.table({
        "timestamp": ["2024-05-01T10:00:01Z", "2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z"],
        "device_id": pa.array([17, 17, 18], type=pa.int64()),
        "value": [2.0, 1.0, 9.0],
    })
    pq.write_table(table, tmp_path / "readings.parquet")
    data = load_table(tmp_path / "readings.parquet")
    assert data.channels == ("value",)  # the numeric device column is not a channel
    np.testing.assert_array_equal(data.series["17"][:, 0], [1.0, 2.0])
    np.testing.assert_array_equal(data.series["18"][:, 0], [9.0])


def test_fingerprint_is_stable_and_sensitive_to_values_devices_and_channels(tmp_path: Path) -> None:
    path = _write(tmp_path / "readings.csv", EPOCH_CSV)
    first = load_table(path)
    assert load_table(path).fingerprint == first.fingerprint
    assert first.fingerprint == fingerprint(first.series, first.channels)

    changed = load_table(_write(tmp_path / "changed.csv", EPOCH_CSV.replace("b,3.0", "b,3.0001")))
    renamed = load_table(_write(tmp_path / "renamed.csv", EPOCH_CSV.replace(",a,", ",c,")))
    relabelled = from_arrays(first.series, ["temperature", "hum"])
    reordered = load_table(_write(tmp_path / "reordered.csv", EPOCH_CSV.replace("200,b", "050,b")))
    prints = {first.fingerprint, changed.fingerprint, renamed.fingerprint, relabelled.fingerprint,
              reordered.fingerprint}
    assert len(prints) == 5


def test_fingerprint_does_not_depend_on_file_row_order(tmp_path: Path) -> None:
    lines = EPOCH_CSV.splitlines()
    shuffled = "\n".join([lines[0], *reversed(lines[1:])]) + "\n"
    assert (load_table(_write(tmp_path / "a.csv", EPOCH_CSV)).fingerprint
            == load_table(_write(tmp_path / "b.csv", shuffled)).fingerprint)


@pytest.mark.parametrize(
    ("name", "text", "kwargs", "message"),
    [
        ("data.json", "{}", {}, "unknown format"),
        ("data.csv", "time,value\n1,2\n", {}, "no 'timestamp' column"),
        ("data.csv", "timestamp,value\n1,2\n", {"value_columns": ["pressure"]}, "not found: pressure"),
        ("data.csv", "timestamp,device_id\n1,a\n", {}, "no numeric value columns"),
        ("data.csv", "timestamp,value\nyesterday,2\n", {}, "not an ISO-8601 time"),
        ("data.csv", "timestamp,state\n1,on\n", {"value_columns": ["state"]}, "'state': type string"),
    ],
)
def test_unusable_files_fail_naming_the_problem(
    tmp_path: Path, name: str, text: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_table(_write(tmp_path / name, text), **kwargs)
