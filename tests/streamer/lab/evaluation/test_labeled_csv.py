"""`streamer evaluate csv`: users' own readings file plus labelled windows."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from streamer.cli import main
from streamer.lab.evaluation.labeled_csv import parse_time, read_labels

START_MS = 1_700_000_000_000


def write_readings(path: Path) -> dict[str, list[list[int]]]:
    """Three devices, one reading a minute; two get a level shift; returns the labels."""
    rng = np.random.default_rng(5)
    labels: dict[str, list[list[int]]] = {}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "device_id", "value"])
        for index, device in enumerate(["pump-1", "pump-2", "fan-1"]):
            n = 1200
            values = 10 * index + np.sin(np.arange(n) / (9.0 + index)) + rng.normal(0, 0.05, n)
            if device != "fan-1":
                values[800:840] += 5.0
                labels[device] = [[START_MS + 800 * 60_000, START_MS + 839 * 60_000]]
            writer.writerows((START_MS + row * 60_000, device, f"{value:.6f}")
                             for row, value in enumerate(values))
    return labels


def test_parse_time_accepts_epoch_ms_and_iso() -> None:
    assert parse_time("1700000000000") == parse_time("2023-11-14T22:13:20") == parse_time(1_700_000_000_000)
    assert parse_time("2023-11-14T23:13:20+01:00") == 1_700_000_000_000


def test_read_labels_from_json_and_csv(tmp_path: Path) -> None:
    as_json = tmp_path / "labels.json"
    as_json.write_text(json.dumps({"pump-1": [["2023-11-14T22:13:20", 1_700_000_060_000]]}))
    as_csv = tmp_path / "labels.csv"
    as_csv.write_text("device_id,start,end\npump-1,1700000000000,2023-11-14T22:14:20\n")
    assert read_labels(as_json) == read_labels(as_csv) == {"pump-1": [(1_700_000_000_000, 1_700_000_060_000)]}
    broken = tmp_path / "broken.csv"
    broken.write_text("device,start\nx,1\n")
    with pytest.raises(ValueError, match="missing column"):
        read_labels(broken)


def test_cli_finds_the_labelled_shifts(tmp_path: Path) -> None:
    labels = write_readings(tmp_path / "readings.csv")
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    out = tmp_path / "result.json"
    code = main(["evaluate", "csv", "--data", str(tmp_path / "readings.csv"), "--labels",
                 str(tmp_path / "labels.json"), "--bundle", "default", "--json", str(out)])
    assert code == 0
    document = json.loads(out.read_text())
    assert document["tp"] == 2 and document["fn"] == 0
    assert set(document["devices"]) == {"pump-1", "pump-2", "fan-1"}
    assert document["readings"] == 3600
    assert document["precision"] > 0


def test_cli_rejects_unreadable_labels(tmp_path: Path) -> None:
    write_readings(tmp_path / "readings.csv")
    (tmp_path / "labels.json").write_text("[1, 2]")
    code = main(["evaluate", "csv", "--data", str(tmp_path / "readings.csv"), "--labels",
                 str(tmp_path / "labels.json"), "--bundle", "default"])
    assert code == 2
