import json
from pathlib import Path

import numpy as np
import pytest

from streamer.lab.evaluation.nab import (
    list_series,
    parse_timestamps,
    probationary_length,
    read_results,
    read_series,
    read_windows,
    results_path,
    window_labels,
    window_rows,
    write_results,
)

MINUTE_MS = 60_000


def write_csv(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def make_corpus(root: Path) -> None:
    """Two categories, NAB's formats: `YYYY-MM-DD HH:MM:SS` rows, `.ffffff` window bounds."""
    write_csv(
        root / "data" / "realTest" / "b_series.csv",
        ["timestamp,value"] + [f"2014-04-10 07:{m:02d}:00,{m * 1.5}" for m in range(10)],
    )
    write_csv(
        root / "data" / "artificialTest" / "a_series.csv",
        ["timestamp,value", "2015-09-01 00:00:00,1", "2015-09-01 00:05:00,-2.25", "2015-09-01 00:10:00,3e2"],
    )
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps({
        "artificialTest/a_series.csv": [],
        "realTest/b_series.csv": [
            ["2014-04-10 07:02:00.000000", "2014-04-10 07:04:00.000000"],
            ["2014-04-10 07:07:00.000000", "2014-04-10 07:07:00.000000"],
        ],
    }))


def test_list_and_read_series(tmp_path: Path) -> None:
    make_corpus(tmp_path)
    assert list_series(tmp_path) == ["artificialTest/a_series.csv", "realTest/b_series.csv"]
    series = read_series(tmp_path, "artificialTest/a_series.csv")
    assert (series.category, series.name, len(series)) == ("artificialTest", "a_series", 3)
    assert series.timestamps.dtype == np.int64
    assert series.values.dtype == np.float64
    assert np.diff(series.timestamps).tolist() == [5 * MINUTE_MS, 5 * MINUTE_MS]
    assert series.values.tolist() == [1.0, -2.25, 300.0]
    assert series.raw_timestamps[0] == "2015-09-01 00:00:00"


def test_timestamps_are_epoch_milliseconds() -> None:
    parsed = parse_timestamps(["1970-01-01 00:00:00", "1970-01-02 00:00:01.500000"])
    assert parsed.tolist() == [0, 86_400_000 + 1_500]
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamps(["yesterday"])


def test_read_series_rejects_a_wrong_header_and_bad_values(tmp_path: Path) -> None:
    write_csv(tmp_path / "data" / "c" / "x.csv", ["time,value", "2014-01-01 00:00:00,1"])
    with pytest.raises(ValueError, match="header"):
        read_series(tmp_path, "c/x.csv")
    write_csv(tmp_path / "data" / "c" / "y.csv", ["timestamp,value", "2014-01-01 00:00:00,abc"])
    with pytest.raises(ValueError, match=r"y\.csv:2: bad value"):
        read_series(tmp_path, "c/y.csv")


def test_read_windows_and_labels(tmp_path: Path) -> None:
    make_corpus(tmp_path)
    windows = read_windows(tmp_path)
    assert windows["artificialTest/a_series.csv"] == []
    series = read_series(tmp_path, "realTest/b_series.csv")
    b_windows = windows["realTest/b_series.csv"]
    assert b_windows[0][1] - b_windows[0][0] == 2 * MINUTE_MS
    assert window_rows(series.timestamps, b_windows) == [(2, 4), (7, 7)]
    assert window_labels(series.timestamps, b_windows).tolist() == [0, 0, 1, 1, 1, 0, 0, 1, 0, 0]


@pytest.mark.parametrize("pairs", [
    [["2014-01-01 00:05:00", "2014-01-01 00:01:00"]],  # ends before it starts
    [["2014-01-01 00:00:00", "2014-01-01 00:05:00"], ["2014-01-01 00:05:00", "2014-01-01 00:09:00"]],
])
def test_read_windows_rejects_reversed_or_overlapping_windows(tmp_path: Path, pairs: list[list[str]]) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "combined_windows.json").write_text(json.dumps({"c/x.csv": pairs}))
    with pytest.raises(ValueError, match=r"c/x\.csv"):
        read_windows(tmp_path)


def test_read_windows_rejects_a_non_object(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "combined_windows.json").write_text("[]")
    with pytest.raises(TypeError, match="object"):
        read_windows(tmp_path)


def test_window_rows_follow_row_order_like_nab() -> None:
    # Repeated stamps: a window closes on the first row stamped with its end.
    stamps = np.array([0, 10, 20, 20, 30, 40], dtype=np.int64)
    assert window_rows(stamps, [(10, 20)]) == [(1, 2)]
    # Bounds between rows: the rows inside them; a window with no rows is dropped.
    assert window_rows(stamps, [(5, 35), (41, 50)]) == [(1, 4)]
    assert window_rows(stamps, [(31, 39)]) == []
    # A step back in time outside the window does not move it.
    assert window_rows(np.array([0, 10, 5, 20, 30], dtype=np.int64), [(20, 30)]) == [(3, 4)]


@pytest.mark.parametrize(("n_rows", "expected"), [(0, 0), (10, 1), (100, 15), (4032, 604), (4999, 749),
                                                  (5000, 750), (22695, 750)])
def test_probationary_length_is_15_percent_capped_at_750(n_rows: int, expected: int) -> None:
    assert probationary_length(n_rows) == expected


def test_results_round_trip_keeps_timestamps_byte_for_byte(tmp_path: Path) -> None:
    make_corpus(tmp_path / "nab")
    series = read_series(tmp_path / "nab", "realTest/b_series.csv")
    windows = read_windows(tmp_path / "nab")["realTest/b_series.csv"]
    scores = np.linspace(0.0, 1.0, len(series)) ** 3  # values with long decimal expansions
    labels = window_labels(series.timestamps, windows)

    path = write_results(tmp_path / "results", "mydet", series, scores, labels)

    assert path == tmp_path / "results" / "mydet" / "realTest" / "mydet_b_series.csv"
    assert path == results_path(tmp_path / "results", "mydet", "realTest/b_series.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "timestamp,value,anomaly_score,label"
    source = (tmp_path / "nab" / "data" / "realTest" / "b_series.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == [line.split(",")[0] for line in source[1:]]

    back = read_results(tmp_path / "results", "mydet", "realTest/b_series.csv")
    assert back.series.raw_timestamps == series.raw_timestamps
    assert np.array_equal(back.series.timestamps, series.timestamps)
    assert np.array_equal(back.series.values, series.values)
    assert np.array_equal(back.scores, scores)
    assert back.labels.tolist() == labels.tolist()


def test_write_results_rejects_a_length_mismatch(tmp_path: Path) -> None:
    make_corpus(tmp_path / "nab")
    series = read_series(tmp_path / "nab", "artificialTest/a_series.csv")
    with pytest.raises(ValueError, match="3 rows"):
        write_results(tmp_path / "results", "d", series, np.zeros(2), np.zeros(3, dtype=np.int8))
