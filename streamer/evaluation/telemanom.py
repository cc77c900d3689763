"""Spacecraft telemetry evaluation (the SMAP/MSL layout of Hundman et al., 2018).

Layout: ``DIR/train/<chan>.npy`` and ``DIR/test/<chan>.npy`` hold float arrays
of shape (time, features) whose column 0 is the telemetry value (the other
columns are one-hot command inputs); ``labeled_anomalies.csv`` has columns
``chan_id, spacecraft, anomaly_sequences, class, num_values`` where
``anomaly_sequences`` is a string like ``[[2149, 2349], [4536, 4844]]`` of
inclusive test-set index ranges.

Each channel is a device. One forecaster is trained on every channel's train
part (column 0; per-device normalisation lets one model serve all channels),
then each channel's train part followed by its test part is replayed through
the production scoring path, so thresholds start the test with a history as a
running daemon would. Alert episodes that touch the test part are the
detected sequences, scored event by event (:mod:`streamer.evaluation.events`).
The command columns are not used: the daemon forecasts the value channel.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.config import Config
from streamer.evaluation.events import EventCounts, Span, clip_spans, count_events, episode_spans, total
from streamer.evaluation.replay import ReplayResult, Series, replay

log = logging.getLogger(__name__)

Float64Array = npt.NDArray[np.float64]

# Replayed readings are one minute apart from this instant (2020-01-01 UTC).
_EPOCH_MS = 1_577_836_800_000
_STEP_MS = 60_000
_COLUMNS = ("chan_id", "spacecraft", "anomaly_sequences")


@dataclass(frozen=True)
class Channel:
    """One telemetry channel: its arrays and labelled test-set anomalies."""

    chan_id: str
    spacecraft: str
    train: Float64Array  # (time, features)
    test: Float64Array
    anomalies: list[Span]


@dataclass(frozen=True)
class TelemanomReport:
    """Event-level results: per channel, per spacecraft and in total."""

    channels: dict[str, EventCounts]
    spacecraft: dict[str, EventCounts]
    total: EventCounts
    replay: ReplayResult

    def as_dict(self) -> dict[str, Any]:
        """The JSON document ``streamer evaluate telemanom --json`` writes."""
        return {
            **self.total.as_dict(),
            "spacecraft": {name: counts.as_dict() for name, counts in sorted(self.spacecraft.items())},
            "channels": {name: counts.as_dict() for name, counts in sorted(self.channels.items())},
            "method": self.replay.method,
            "model_version": self.replay.model_version,
            "readings": self.replay.readings,
            "rejected": dict(self.replay.rejected),
            "seconds": round(self.replay.seconds, 3),
        }


def read_corpus(data_dir: Path, labels_csv: Path) -> list[Channel]:
    """The labelled channels of a corpus, in the labels file's order.

    Raises:
        ValueError: A missing column, an unparseable sequence list, or a
            channel whose arrays are missing or malformed.
    """
    with labels_csv.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in _COLUMNS if name not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{labels_csv}: missing column(s) {', '.join(missing)}")
        rows = list(reader)
    channels = []
    for line, row in enumerate(rows, start=2):
        chan_id = row["chan_id"].strip()
        try:
            ranges = json.loads(row["anomaly_sequences"])
            anomalies = [(int(first), int(last)) for first, last in ranges]
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{labels_csv}:{line}: anomaly_sequences {row['anomaly_sequences']!r}: {exc}"
                             ) from exc
        train = _array(data_dir / "train" / f"{chan_id}.npy")
        test = _array(data_dir / "test" / f"{chan_id}.npy")
        channels.append(Channel(chan_id, row["spacecraft"].strip(), train, test, anomalies))
    if not channels:
        raise ValueError(f"{labels_csv}: no channels")
    return channels


def _array(path: Path) -> Float64Array:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or len(array) == 0:
        raise ValueError(f"{path}: expected a (time, features) array, got shape {array.shape}")
    return array


def training_series(channels: Sequence[Channel]) -> dict[str, Float64Array]:
    """Column 0 of every channel's train part, for the forecaster."""
    return {channel.chan_id: channel.train[:, :1] for channel in channels}


def evaluate(config: Config, channels: Sequence[Channel]) -> TelemanomReport:
    """Replay every channel (train then test) and score the test part's alert episodes.

    ``config`` must have the single channel ``value`` and a predictor trained
    for it.
    """
    series = []
    for channel in channels:
        values = np.concatenate([channel.train[:, 0], channel.test[:, 0]])[:, None]
        series.append(Series(channel.chan_id, _EPOCH_MS + np.arange(len(values), dtype=np.int64) * _STEP_MS,
                             values))
    result = replay(config, series)
    spans = episode_spans(result.alerts, {item.device_id: item.ts_ms for item in series})
    per_channel: dict[str, EventCounts] = {}
    per_craft: dict[str, list[EventCounts]] = {}
    for channel in channels:
        first = len(channel.train)
        last = first + len(channel.test) - 1
        detected = clip_spans(spans.get(channel.chan_id, []), first, last, shift=first)
        counts = count_events(channel.anomalies, detected)
        per_channel[channel.chan_id] = counts
        per_craft.setdefault(channel.spacecraft, []).append(counts)
    crafts = {name: total(items) for name, items in per_craft.items()}
    report = TelemanomReport(per_channel, crafts, total(per_channel.values()), result)
    log.info("telemanom: %d channels, precision %.3f recall %.3f F1 %.3f", len(channels),
             report.total.precision, report.total.recall, report.total.f1)
    return report
