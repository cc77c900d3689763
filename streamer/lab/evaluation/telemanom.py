"""Spacecraft telemetry evaluation (the SMAP/MSL layout of Hundman et al., 2018).

Layout: ``DIR/train/<chan>.npy`` and ``DIR/test/<chan>.npy`` hold float arrays
of shape (time, features) whose column 0 is the telemetry value (the other
columns are one-hot command inputs); ``labeled_anomalies.csv`` has columns
``chan_id, spacecraft, anomaly_sequences, class, num_values`` where
``anomaly_sequences`` is a string like ``[[2149, 2349], [4536, 4844]]`` of
inclusive test-set index ranges.

Each distinct channel is a device. One forecaster is trained on every
channel's train part (column 0; per-device normalisation lets one model serve
all channels), then each channel's train part followed by its test part is
replayed through the production scoring path, so thresholds start the test
with a history as a running daemon would. Alert episodes that touch the test
part are the detected sequences, scored event by event
(:mod:`streamer.lab.evaluation.events`). The command columns are not used: the
daemon forecasts the value channel.

A channel may be listed more than once (the published SMAP/MSL file lists one
channel twice, with two label sets, and the published results count both
rows). Such a channel is trained on and replayed once, and every labels row is
scored on its own against that channel's detections, so it adds its own TP,
FP and FN to the totals and to its own spacecraft's totals. In the
``channels`` section of the JSON each row has its own key: the channel id for
its first row, ``<chan_id>#<n>`` for its n-th (``P-2``, ``P-2#2``).

Event-level F1 does not see how long a detection lasts: an episode that opens
early and never resolves overlaps every later label. The report's
``alerted_fraction`` (the share of test rows inside detected ranges) shows it.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.config import Config
from streamer.lab.evaluation.events import (
    EventCounts,
    Span,
    clip_spans,
    count_events,
    episode_spans,
    span_mask,
    total,
)
from streamer.lab.evaluation.operator import Operator
from streamer.lab.evaluation.replay import ReplayResult, Series, replay

log = logging.getLogger(__name__)

Float64Array = npt.NDArray[np.float64]

# Replayed readings are one minute apart from this instant (2020-01-01 UTC).
_EPOCH_MS = 1_577_836_800_000
_STEP_MS = 60_000
_COLUMNS = ("chan_id", "spacecraft", "anomaly_sequences")

# Published event-level results by spacecraft: telemanom (Hundman et al.,
# 2018) on MSL, recomputed from the authors' per-channel results (see the
# datasets README): precision 0.962, recall 0.694, F1 0.806.
PUBLISHED_DETECTOR = "telemanom"
PUBLISHED: Mapping[str, EventCounts] = {"MSL": EventCounts(tp=25, fp=1, fn=11)}


@dataclass(frozen=True)
class Channel:
    """One row of the labels file: its channel's arrays and labelled test-set anomalies.

    ``key`` names the row in the report: ``chan_id`` for a channel's first
    row, ``<chan_id>#<n>`` for its n-th. Rows of one channel share its arrays.
    """

    chan_id: str
    spacecraft: str
    train: Float64Array  # (time, features)
    test: Float64Array
    anomalies: list[Span]
    key: str


@dataclass(frozen=True)
class TelemanomReport:
    """Event-level results: per labels row (keyed by :attr:`Channel.key`), per spacecraft and in total."""

    channels: dict[str, EventCounts]
    spacecraft: dict[str, EventCounts]
    total: EventCounts
    replay: ReplayResult
    # Test rows inside detected ranges, over the test rows of every distinct channel.
    alerted_fraction: float

    def as_dict(self) -> dict[str, Any]:
        """The JSON document ``streamer evaluate telemanom --json`` writes."""
        return {
            **self.total.as_dict(),
            "alerted_fraction": round(self.alerted_fraction, 4),
            "spacecraft": {name: counts.as_dict() for name, counts in sorted(self.spacecraft.items())},
            "channels": {name: counts.as_dict() for name, counts in sorted(self.channels.items())},
            "method": self.replay.method,
            "model_version": self.replay.model_version,
            "readings": self.replay.readings,
            "rejected": dict(self.replay.rejected),
            "seconds": round(self.replay.seconds, 3),
        }


def read_corpus(data_dir: Path, labels_csv: Path) -> list[Channel]:
    """The rows of a corpus' labels file with their channels' arrays, in the file's order.

    A channel listed more than once gives one :class:`Channel` per row (keys
    ``chan_id``, ``chan_id#2``, ...) sharing one load of its arrays.

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
    arrays: dict[str, tuple[Float64Array, Float64Array]] = {}
    listed: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        chan_id = row["chan_id"].strip()
        try:
            ranges = json.loads(row["anomaly_sequences"])
            anomalies = [(int(first), int(last)) for first, last in ranges]
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{labels_csv}:{line}: anomaly_sequences {row['anomaly_sequences']!r}: {exc}"
                             ) from exc
        if chan_id not in arrays:
            arrays[chan_id] = (_array(data_dir / "train" / f"{chan_id}.npy"),
                               _array(data_dir / "test" / f"{chan_id}.npy"))
        train, test = arrays[chan_id]
        listed[chan_id] = listed.get(chan_id, 0) + 1
        key = chan_id if listed[chan_id] == 1 else f"{chan_id}#{listed[chan_id]}"
        channels.append(Channel(chan_id, row["spacecraft"].strip(), train, test, anomalies, key))
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


def training_description(data_dir: Path) -> str:
    """What a forecaster trained on :func:`training_series` learnt from, for its bundle."""
    return f"telemanom train/ of {data_dir} (column 0)"


def training_series(channels: Sequence[Channel]) -> dict[str, Float64Array]:
    """Column 0 of every distinct channel's train part, for the forecaster (once per channel)."""
    return {channel.chan_id: channel.train[:, :1] for channel in _distinct(channels)}


def _distinct(channels: Sequence[Channel]) -> list[Channel]:
    """The first row of every channel, in order: what is trained on and replayed."""
    first: dict[str, Channel] = {}
    for channel in channels:
        first.setdefault(channel.chan_id, channel)
    return list(first.values())


def label_rows(channels: Sequence[Channel]) -> dict[str, list[Span]]:
    """Every labelled anomaly of each channel (all its labels rows) as rows of its replayed series.

    >>> test = np.zeros((50, 1))
    >>> label_rows([Channel("A-1", "MSL", np.zeros((100, 1)), test, [(5, 9)], "A-1"),
    ...             Channel("A-1", "MSL", np.zeros((100, 1)), test, [(20, 29), (5, 9)], "A-1#2")])
    {'A-1': [(105, 109), (120, 129)]}
    """
    rows: dict[str, set[Span]] = {}
    for channel in channels:
        shift = len(channel.train)
        rows.setdefault(channel.chan_id, set()).update((first + shift, last + shift)
                                                       for first, last in channel.anomalies)
    return {chan_id: sorted(spans) for chan_id, spans in rows.items()}


def evaluate(config: Config, channels: Sequence[Channel], *, operator_delay: int | None = None
             ) -> TelemanomReport:
    """Replay every distinct channel (train then test) and score the test part's alert episodes.

    Every row of ``channels`` (from :func:`read_corpus`) is scored on its own
    against its channel's detections, and counted in its own spacecraft.
    ``config`` must have the single channel ``value`` and a predictor trained
    for it. With ``operator_delay``, a simulated operator
    (:mod:`streamer.lab.evaluation.operator`) answers every alert from the
    labels (every labels row of the channel) that many readings later.

    Raises:
        ValueError: Two rows with one key.
    """
    keys = [channel.key for channel in channels]
    if len(set(keys)) != len(keys):
        raise ValueError("labels rows must have distinct keys (see read_corpus)")
    series = []
    for channel in _distinct(channels):
        values = np.concatenate([channel.train[:, 0], channel.test[:, 0]])[:, None]
        series.append(Series(channel.chan_id, _EPOCH_MS + np.arange(len(values), dtype=np.int64) * _STEP_MS,
                             values))
    operator = None if operator_delay is None else Operator(series, label_rows(channels), operator_delay)
    result = replay(config, series, feedback=operator)
    spans = episode_spans(result.alerts, {item.device_id: item.ts_ms for item in series})
    per_channel: dict[str, EventCounts] = {}
    per_craft: dict[str, list[EventCounts]] = {}
    for channel in channels:
        first = len(channel.train)
        last = first + len(channel.test) - 1
        detected = clip_spans(spans.get(channel.chan_id, []), first, last, shift=first)
        counts = count_events(channel.anomalies, detected)
        per_channel[channel.key] = counts
        per_craft.setdefault(channel.spacecraft, []).append(counts)
    alerted = test_rows = 0
    for channel in _distinct(channels):
        first, rows = len(channel.train), len(channel.test)
        test_rows += rows
        detected = clip_spans(spans.get(channel.chan_id, []), first, first + rows - 1, shift=first)
        alerted += int(span_mask(detected, rows).sum())
    crafts = {name: total(items) for name, items in per_craft.items()}
    report = TelemanomReport(per_channel, crafts, total(per_channel.values()), result,
                             alerted / test_rows if test_rows else 0.0)
    log.info("telemanom: %d channels, %d labels rows, precision %.3f recall %.3f F1 %.3f, %.1f%% of test "
             "rows alerted", len(series), len(channels), report.total.precision, report.total.recall,
             report.total.f1, 100 * report.alerted_fraction)
    return report
