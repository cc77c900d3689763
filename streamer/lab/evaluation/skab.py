"""Skoltech Anomaly Benchmark (SKAB v0.9): read the experiments, replay them, score them as SKAB does.

Layout::

    <root>/<group>/<n>.csv      valve1/0.csv ... valve2/3.csv, other/1.csv ...
    <root>/anomaly-free/anomaly-free.csv   a normal run, not an experiment (skipped)

Each experiment is a semicolon-separated file with the header
``datetime;Accelerometer1RMS;...;Volume Flow RateRMS;anomaly;changepoint``:
eight sensors at 1 Hz, a 0/1 anomaly label per row and a 0/1 mark on each
labelled changepoint. Timestamps are naive wall-clock strings, read as UTC.

The protocol is SKAB's strict one (``core/utils.py: preprocess_skab``): the
first 400 rows of every experiment are for training, the rest is the test
part. Every experiment becomes a device named after its file (``valve1/0``);
its training rows then its test rows are replayed through the production
scoring path (:func:`streamer.lab.evaluation.replay.replay`) with all the others as
one fleet, so thresholds start the test part with a history as a running
daemon would. A test row is predicted anomalous when it lies inside an alert
episode (:func:`streamer.lab.evaluation.events.episode_spans`, as the telemanom and
csv evaluations count them); :mod:`streamer.lab.evaluation.skab_scoring` turns
those rows into SKAB's outlier and changepoint scores.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.codec import Alert
from streamer.config import Config
from streamer.lab.evaluation import skab_scoring
from streamer.lab.evaluation.events import (
    EventCounts,
    Span,
    clip_spans,
    count_events,
    episode_spans,
    span_mask,
    total,
)
from streamer.lab.evaluation.nab import parse_timestamps
from streamer.lab.evaluation.operator import Operator
from streamer.lab.evaluation.replay import ReplayResult, Series, replay

log = logging.getLogger(__name__)

Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# The eight sensors, in file (and model input) order; the channel names too.
SENSORS = ("Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
           "Thermocouple", "Voltage", "Volume Flow RateRMS")
HEADER = ("datetime", *SENSORS, "anomaly", "changepoint")
# SKAB's train_test_split(train_size=400, shuffle=False) on every experiment.
TRAIN_ROWS = 400
ANOMALY_FREE = "anomaly-free"
DEFAULT_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Experiment:
    """One SKAB experiment: timestamps, sensor values and labels, in file order."""

    key: str  # "<group>/<n>", also the device id
    ts_ms: npt.NDArray[np.int64]
    values: Float64Array  # (rows, len(SENSORS))
    anomaly: BoolArray
    changepoint: BoolArray

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    @property
    def test(self) -> slice:
        """The rows SKAB scores: everything after the training rows."""
        return slice(TRAIN_ROWS, len(self))


def _sort_key(path: Path) -> tuple[str, int, str]:
    """Files in numeric order within their group (``valve1/2`` before ``valve1/10``)."""
    return (path.parent.name, int(path.stem) if path.stem.isdigit() else -1, path.stem)


def list_experiments(root: Path) -> list[str]:
    """Keys (``<group>/<n>``) of every experiment under ``root``, groups sorted, files numerically.

    Raises:
        FileNotFoundError: ``root`` holds no experiment.
    """
    paths = [p for p in root.glob("*/*.csv") if p.parent.name != ANOMALY_FREE]
    if not paths:
        raise FileNotFoundError(f"{root}: no SKAB experiments (<group>/<n>.csv)")
    return [f"{p.parent.name}/{p.stem}" for p in sorted(paths, key=_sort_key)]


def read_experiment(root: Path, key: str) -> Experiment:
    """Read ``root/<key>.csv``.

    Raises:
        ValueError: A different header, a malformed row, timestamps that do
            not increase, or no test rows; the message names the file (and
            line).
    """
    path = root / f"{key}.csv"
    stamps: list[str] = []
    rows: list[list[float]] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=";")
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise ValueError(f"{path}: header must be {';'.join(HEADER)}, got {header}")
        for row in reader:
            if not row:
                continue
            if len(row) != len(HEADER):
                raise ValueError(f"{path}:{reader.line_num}: expected {len(HEADER)} fields, got {len(row)}")
            stamps.append(row[0])
            try:
                rows.append([float(field) for field in row[1:]])
            except ValueError as exc:
                raise ValueError(f"{path}:{reader.line_num}: {exc}") from exc
    try:
        ts_ms = parse_timestamps(stamps)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    stale = np.flatnonzero(np.diff(ts_ms) <= 0)
    if stale.size:
        later = int(stale[0]) + 1
        raise ValueError(f"{path}: data row {later + 1} ({stamps[later]}) is not later than the one before: "
                         "the daemon drops repeated and older timestamps")
    if len(stamps) <= TRAIN_ROWS:
        raise ValueError(f"{path}: {len(stamps)} rows, none left for testing after the {TRAIN_ROWS} "
                         "training rows")
    table = np.asarray(rows, dtype=np.float64)
    sensors = len(SENSORS)
    if not np.isfinite(table[:, :sensors]).all():
        raise ValueError(f"{path}: sensor values must be finite")
    return Experiment(key, ts_ms, table[:, :sensors], table[:, sensors] == 1, table[:, sensors + 1] == 1)


def read_corpus(root: Path) -> list[Experiment]:
    """Every experiment under ``root`` (see :func:`list_experiments`)."""
    return [read_experiment(root, key) for key in list_experiments(root)]


def training_series(experiments: Sequence[Experiment]) -> dict[str, Float64Array]:
    """The training rows of every experiment, for the forecaster."""
    return {item.key: item.values[:TRAIN_ROWS] for item in experiments}


@dataclass(frozen=True)
class SkabReport:
    """SKAB's scores of one replay, in total and per experiment."""

    outliers: skab_scoring.Confusion
    per_experiment: dict[str, skab_scoring.Confusion]
    changepoints: dict[int, dict[str, skab_scoring.ChangepointScore]]  # by window width (s)
    onsets: dict[str, skab_scoring.ChangepointScore]  # rising edges only, default width
    window_seconds: int
    episodes: dict[str, int]  # alert episodes touching each test part
    replay: ReplayResult

    def nab(self, window_seconds: int | None = None) -> dict[str, float]:
        """Normalised changepoint scores at a window width (default: the report's)."""
        return skab_scoring.normalised(self.changepoints[window_seconds or self.window_seconds])

    def as_dict(self) -> dict[str, Any]:
        """The JSON document ``streamer evaluate skab --json`` writes."""
        main = self.changepoints[self.window_seconds]
        return {
            "f1": round(self.outliers.f1, 4),
            "far": round(self.outliers.far, 4),
            "mar": round(self.outliers.mar, 4),
            "confusion": self.outliers.as_dict(),
            "nab": self.nab(),
            "nab_window_seconds": self.window_seconds,
            "nab_counts": {name: {"tp": s.tp, "fp": s.fp, "fn": s.fn} for name, s in main.items()},
            "nab_by_window": {str(width): skab_scoring.normalised(scores)
                              for width, scores in sorted(self.changepoints.items())},
            "nab_onsets_only": skab_scoring.normalised(self.onsets),
            "experiments": {
                key: {**counts.as_dict(), "episodes": self.episodes[key]}
                for key, counts in self.per_experiment.items()
            },
            "method": self.replay.method,
            "model_version": self.replay.model_version,
            "readings": self.replay.readings,
            "rejected": dict(self.replay.rejected),
            "replay_seconds": round(self.replay.seconds, 3),
        }


def predicted_rows(spans: Sequence[tuple[int, int]], n_rows: int) -> BoolArray:
    """Test rows inside an alert episode; ``spans`` are inclusive full-series rows.

    >>> predicted_rows([(398, 401), (405, 405)], 407).astype(int).tolist()
    [1, 1, 0, 0, 0, 1, 0]
    """
    return span_mask(clip_spans(spans, TRAIN_ROWS, n_rows - 1, shift=TRAIN_ROWS), n_rows - TRAIN_ROWS)


def anomaly_spans(labels: BoolArray) -> list[Span]:
    """Runs of labelled rows as inclusive ``(first, last)`` ranges.

    >>> anomaly_spans(np.array([0, 1, 1, 0, 0, 1], bool))
    [(1, 2), (5, 5)]
    """
    edges = np.diff(np.concatenate([[0], labels.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [(int(a), int(b)) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]


def episode_counts(experiments: Sequence[Experiment], alerts: Sequence[Alert]) -> EventCounts:
    """Alert episodes against labelled anomalies in the test parts, event by event (as telemanom counts).

    Not SKAB's protocol (it counts rows): how many episodes an operator saw
    that overlapped no labelled anomaly.
    """
    spans = episode_spans(alerts, {item.key: item.ts_ms for item in experiments})
    counts = []
    for item in experiments:
        last = len(item) - 1
        counts.append(count_events(anomaly_spans(item.anomaly[item.test]),
                                   clip_spans(spans.get(item.key, []), TRAIN_ROWS, last, shift=TRAIN_ROWS)))
    return total(counts)


def evaluate(config: Config, experiments: Sequence[Experiment], *,
             window_seconds: int = DEFAULT_WINDOW_SECONDS, operator_delay: int | None = None) -> SkabReport:
    """Replay every experiment and score its test part as SKAB does.

    ``config`` must read the eight :data:`SENSORS` channels (see
    :func:`streamer.lab.evaluation.recipe.configured`). With
    ``operator_delay``, a simulated operator
    (:mod:`streamer.lab.evaluation.operator`) answers every alert from the
    anomaly labels that many readings later: an episode overlapping a run of
    labelled rows is confirmed (it holds true positive rows), any other is a
    false alarm.
    """
    series = [Series(item.key, item.ts_ms, item.values) for item in experiments]
    operator = None if operator_delay is None else Operator(
        series, {item.key: anomaly_spans(item.anomaly) for item in experiments}, operator_delay)
    result = replay(config, series, feedback=operator)
    spans = episode_spans(result.alerts, {item.device_id: item.ts_ms for item in series})
    per_experiment: dict[str, skab_scoring.Confusion] = {}
    episodes: dict[str, int] = {}
    scored: list[skab_scoring.ScoredPart] = []
    for item in experiments:
        predicted = predicted_rows(spans.get(item.key, []), len(item))
        per_experiment[item.key] = skab_scoring.confusion(item.anomaly[item.test], predicted)
        episodes[item.key] = len(clip_spans(spans.get(item.key, []), TRAIN_ROWS, len(item) - 1))
        scored.append(skab_scoring.ScoredPart(item.ts_ms[item.test], item.changepoint[item.test], predicted))
    widths = sorted({*skab_scoring.WINDOW_SECONDS, window_seconds})
    changepoints = {width: skab_scoring.score_corpus(scored, width_ms=width * 1000) for width in widths}
    onsets = skab_scoring.score_corpus(scored, width_ms=window_seconds * 1000, onsets_only=True)
    report = SkabReport(skab_scoring.total(per_experiment.values()), per_experiment, changepoints, onsets,
                        window_seconds, episodes, result)
    log.info("skab: %d experiments, F1 %.3f FAR %.2f%% MAR %.2f%%, NAB standard %.2f (%d s window)",
             len(experiments), report.outliers.f1, report.outliers.far, report.outliers.mar,
             report.nab()["standard"], window_seconds)
    return report
