"""Evaluation on users' own data: a readings file plus a file of labelled anomaly windows.

Readings: ``.csv`` or ``.parquet`` with a timestamp column, a device column
(optional: without it the file is one device) and value column(s), as
``streamer train`` reads them. Labels: either JSON mapping each device to
``[[start, end], ...]`` or CSV with columns ``device_id,start,end``; times
are epoch milliseconds or ISO 8601 (``2024-05-01T12:00:00``, UTC unless
an offset is given), ends inclusive.

Results are event-level (:mod:`streamer.lab.evaluation.events`), per device and
in total; the per-row scores can be written for other tools.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from streamer.config import Config
from streamer.lab.evaluation.events import EventCounts, Span, count_events, episode_spans, total
from streamer.lab.evaluation.replay import ReplayResult, Series, replay

TimeWindow = tuple[int, int]


@dataclass(frozen=True)
class CsvReport:
    """Event-level results per device and in total."""

    devices: dict[str, EventCounts]
    total: EventCounts
    replay: ReplayResult

    def as_dict(self) -> dict[str, Any]:
        """The JSON document ``streamer evaluate csv --json`` writes."""
        return {
            **self.total.as_dict(),
            "devices": {name: counts.as_dict() for name, counts in sorted(self.devices.items())},
            "method": self.replay.method,
            "model_version": self.replay.model_version,
            "readings": self.replay.readings,
            "rejected": dict(self.replay.rejected),
            "seconds": round(self.replay.seconds, 3),
        }


def parse_time(text: str | int | float) -> int:
    """Epoch milliseconds from epoch ms or ISO 8601.

    >>> parse_time("1700000000000"), parse_time("2023-11-14T22:13:20")
    (1700000000000, 1700000000000)
    """
    if isinstance(text, int | float):
        return int(text)
    stripped = text.strip()
    if stripped.lstrip("-").isdigit():
        return int(stripped)
    moment = datetime.fromisoformat(stripped.replace(" ", "T"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def read_labels(path: Path) -> dict[str, list[TimeWindow]]:
    """Labelled windows per device from JSON or CSV (see the module docstring).

    Raises:
        ValueError: Unreadable file, missing columns or unparseable times.
    """
    try:
        if path.suffix.lower() == ".json":
            return _json_labels(json.loads(path.read_text(encoding="utf-8")))
        with path.open(newline="", encoding="utf-8") as handle:
            return _csv_labels(csv.DictReader(handle))
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _json_labels(document: object) -> dict[str, list[TimeWindow]]:
    if not isinstance(document, dict):
        raise TypeError("expected an object mapping device ids to [[start, end], ...]")
    return {str(device): [(parse_time(a), parse_time(b)) for a, b in ranges]
            for device, ranges in document.items()}


def _csv_labels(reader: csv.DictReader[str]) -> dict[str, list[TimeWindow]]:
    missing = {"device_id", "start", "end"} - set(reader.fieldnames or [])
    if missing:
        raise ValueError(f"missing column(s) {', '.join(sorted(missing))}")
    windows: dict[str, list[TimeWindow]] = {}
    for row in reader:
        windows.setdefault(row["device_id"], []).append((parse_time(row["start"]), parse_time(row["end"])))
    return windows


def evaluate(
    config: Config,
    series: Mapping[str, np.ndarray[Any, Any]],
    timestamps: Mapping[str, np.ndarray[Any, Any]],
    labels: Mapping[str, list[TimeWindow]],
) -> CsvReport:
    """Replay every device and count labelled windows found by alert episodes."""
    replayed = [Series(device, np.asarray(timestamps[device], np.int64), np.asarray(values, np.float64))
                for device, values in series.items()]
    result = replay(config, replayed)
    times = {item.device_id: item.ts_ms for item in replayed}
    spans = episode_spans(result.alerts, times)
    devices: dict[str, EventCounts] = {}
    for device, ts in times.items():
        label_rows = [_rows(ts, window) for window in labels.get(device, [])]
        found = [span for span in label_rows if span is not None]
        devices[device] = count_events(found, spans.get(device, []))
    return CsvReport(devices, total(devices.values()), result)


def _rows(ts: np.ndarray[Any, Any], window: TimeWindow) -> Span | None:
    """The rows whose time lies in the window, or None if none does."""
    first = int(np.searchsorted(ts, window[0], side="left"))
    last = int(np.searchsorted(ts, window[1], side="right")) - 1
    return (first, last) if first <= last else None
