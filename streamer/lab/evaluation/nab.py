"""Numenta Anomaly Benchmark (NAB) corpus: read series and windows, write results.

Layout of a NAB checkout (v1.1)::

    <root>/data/<category>/<name>.csv          header ``timestamp,value``
    <root>/labels/combined_windows.json        {"<category>/<name>.csv": [[start, end], ...]}

and of the results other NAB tools read::

    <results>/<detector>/<category>/<detector>_<name>.csv
        timestamp,value,anomaly_score,label

A series is named by its *key*, the data path relative to ``data/``
(``realKnownCause/nyc_taxi.csv``), which is also the key in the windows file.
Timestamps are naive wall-clock strings (``YYYY-MM-DD HH:MM:SS``; the windows
file adds ``.ffffff``). They are read as epoch milliseconds as if they were UTC:
only their order and equality matter, so no time zone is ever applied. The
original strings are kept so results write them back byte for byte.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
Int8Array = npt.NDArray[np.int8]

# A labelled window: first and last timestamp (epoch ms), both inclusive.
Window = tuple[int, int]
# The same window as row indices into one series, both inclusive.
RowWindow = tuple[int, int]

DATA_DIR = "data"
WINDOWS_FILE = "labels/combined_windows.json"
SERIES_HEADER = ("timestamp", "value")
RESULTS_HEADER = ("timestamp", "value", "anomaly_score", "label")

# NAB leaves the first 15% of each file unscored, capped at 15% of 5000 rows:
# long files should not spend thousands of rows only learning.
PROBATION_PERCENT = 0.15
_PROBATION_CAP_ROWS = 5000


def parse_timestamps(texts: Sequence[str]) -> Int64Array:
    """Parse ISO-like wall-clock strings to epoch milliseconds (read as UTC).

    >>> parse_timestamps(["1970-01-01 00:00:01", "2014-04-10 07:15:00.000000"]).tolist()
    [1000, 1397114100000]
    """
    try:
        parsed = np.asarray(texts, dtype=np.str_).astype("datetime64[ms]")
    except ValueError as exc:
        raise ValueError(f"unparseable timestamp: {exc}") from exc
    result: Int64Array = parsed.astype(np.int64)
    return result


def probationary_length(n_rows: int, percent: float = PROBATION_PERCENT) -> int:
    """Number of leading rows that are never scored (NAB: 15%, at most 750).

    Computed the way NAB does (the floor of the float product), so the boundary
    row is the same on every file.

    >>> probationary_length(4032), probationary_length(22695), probationary_length(10)
    (604, 750, 1)
    """
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    # NAB compares the row index with a float cap (percent * 5000); for an
    # integer index `i >= cap` is `i >= ceil(cap)`.
    return min(math.floor(percent * n_rows), math.ceil(percent * _PROBATION_CAP_ROWS))


@dataclass(frozen=True)
class NabSeries:
    """One corpus file: its key, timestamps (epoch ms) and values, in file order."""

    key: str
    timestamps: Int64Array
    values: Float64Array
    raw_timestamps: tuple[str, ...]  # as read, for writing results back unchanged

    @property
    def category(self) -> str:
        """The folder under ``data/`` (``realKnownCause``)."""
        return self.key.rsplit("/", 1)[0]

    @property
    def name(self) -> str:
        """The file name without ``.csv`` (``nyc_taxi``)."""
        return Path(self.key).stem

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])


def list_series(root: Path) -> list[str]:
    """Keys of every series under ``root/data``, sorted (``category/name.csv``)."""
    data = root / DATA_DIR
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no NAB data folder")
    return sorted(p.relative_to(data).as_posix() for p in data.glob("*/*.csv"))


def read_series(root: Path, key: str) -> NabSeries:
    """Read ``root/data/<key>`` in file order (NAB's stamps are not strictly increasing)."""
    path = root / DATA_DIR / key
    raw: list[str] = []
    values: list[float] = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != SERIES_HEADER:
            raise ValueError(f"{path}: header must be {','.join(SERIES_HEADER)}, got {header}")
        for row in reader:
            if len(row) != len(SERIES_HEADER):
                raise ValueError(f"{path}:{reader.line_num}: expected 2 fields, got {len(row)}")
            raw.append(row[0])
            try:
                values.append(float(row[1]))
            except ValueError as exc:
                raise ValueError(f"{path}:{reader.line_num}: bad value {row[1]!r}") from exc
    try:
        timestamps = parse_timestamps(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return NabSeries(key, timestamps, np.asarray(values, dtype=np.float64), tuple(raw))


def read_windows(root: Path, relative: str = WINDOWS_FILE) -> dict[str, list[Window]]:
    """Read the labelled windows (epoch ms, inclusive) of every file, by key.

    Windows of a file must be sorted and disjoint: NAB scores a false positive
    against the window just before it, which only means something then.
    """
    path = root / relative
    with path.open() as f:
        document = json.load(f)
    if not isinstance(document, dict):
        raise TypeError(f"{path}: expected an object of key -> windows")
    windows: dict[str, list[Window]] = {}
    for key, pairs in document.items():
        if not isinstance(pairs, list) or any(not isinstance(p, list) or len(p) != 2 for p in pairs):
            raise ValueError(f"{path}: {key}: expected a list of [start, end] pairs")
        bounds = parse_timestamps([str(t) for pair in pairs for t in pair]).reshape(-1, 2)
        parsed = [(int(a), int(b)) for a, b in bounds]
        if any(a > b for a, b in parsed):
            raise ValueError(f"{path}: {key}: a window ends before it starts")
        if any(later[0] <= earlier[1] for earlier, later in itertools.pairwise(parsed)):
            raise ValueError(f"{path}: {key}: windows overlap or are out of order")
        windows[key] = parsed
    return windows


def window_rows(timestamps: Int64Array, windows: Sequence[Window]) -> list[RowWindow]:
    """Row ranges (inclusive) NAB scores as each window; windows with no rows are dropped.

    NAB works in row order: a window opens on the first row stamped with its
    start and closes on the first row after that stamped with its end (the
    corpus has repeated stamps and one step back in time, none of them near a
    window). Bounds that match no row fall back to the rows between them.

    >>> window_rows(np.array([0, 10, 20, 20, 30, 40]), [(10, 20), (31, 39)])
    [(1, 2)]
    """
    rows: list[RowWindow] = []
    n = timestamps.shape[0]
    for start, end in windows:
        opening = np.flatnonzero(timestamps == start)
        if not opening.size:
            opening = np.flatnonzero(timestamps >= start)
        if not opening.size or timestamps[opening[0]] > end:
            log.warning("window [%d, %d] holds no rows; it is ignored", start, end)
            continue
        first = int(opening[0])
        beyond = np.flatnonzero(timestamps[first:] > end)
        stop = first + int(beyond[0]) if beyond.size else n
        closing = np.flatnonzero(timestamps[first:stop] == end)
        rows.append((first, first + int(closing[0]) if closing.size else stop - 1))
    return rows


def window_labels(timestamps: Int64Array, windows: Sequence[Window]) -> Int8Array:
    """Per-row label: 1 where the timestamp lies in a window, 0 elsewhere (as NAB labels).

    >>> window_labels(np.array([0, 10, 20, 30]), [(10, 20)]).tolist()
    [0, 1, 1, 0]
    """
    labels = np.zeros(timestamps.shape[0], dtype=np.int8)
    for start, end in windows:
        labels[(timestamps >= start) & (timestamps <= end)] = 1
    return labels


def results_path(results_dir: Path, detector: str, key: str) -> Path:
    """Where NAB tools expect ``detector``'s results for the series ``key``."""
    category, _, filename = key.rpartition("/")
    return results_dir / detector / category / f"{detector}_{filename}"


def write_results(
    results_dir: Path, detector: str, series: NabSeries, scores: Float64Array, labels: Int8Array
) -> Path:
    """Write one results file (one row per input row, same order); return its path.

    Values and scores are written as the shortest text that reads back to the
    same float.
    """
    n = len(series)
    if scores.shape != (n,) or labels.shape != (n,):
        raise ValueError(
            f"{series.key}: {n} rows but scores {scores.shape} and labels {labels.shape}"
        )
    path = results_path(results_dir, detector, series.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(RESULTS_HEADER)
        writer.writerows(
            zip(
                series.raw_timestamps,
                map(repr, series.values.tolist()),
                map(repr, scores.tolist()),
                labels.tolist(),
                strict=True,
            )
        )
    return path


@dataclass(frozen=True)
class DetectorResults:
    """One results file read back: the input series, the scores and the labels."""

    series: NabSeries
    scores: Float64Array
    labels: Int8Array


def read_results(results_dir: Path, detector: str, key: str) -> DetectorResults:
    """Read back the results file :func:`write_results` (or NAB) wrote for ``key``."""
    path = results_path(results_dir, detector, key)
    columns: tuple[list[str], list[str], list[str], list[str]] = ([], [], [], [])
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header[:4]) != RESULTS_HEADER:
            raise ValueError(f"{path}: header must start with {','.join(RESULTS_HEADER)}")
        for row in reader:
            if len(row) < len(RESULTS_HEADER):
                raise ValueError(f"{path}:{reader.line_num}: expected 4 fields, got {len(row)}")
            for column, field in zip(columns, row, strict=False):
                column.append(field)
    raw, values, scores, labels = columns
    try:
        series = NabSeries(
            key, parse_timestamps(raw), np.asarray(values, dtype=np.float64), tuple(raw)
        )
        return DetectorResults(
            series,
            np.asarray(scores, dtype=np.float64),
            # NAB writes labels as 0/1; pandas may have written them as 0.0/1.0.
            np.asarray(labels, dtype=np.float64).astype(np.int8),
        )
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc

