"""Alert events on the wire: what an episode change in a scored round becomes.

The pipeline records, per round, the rows whose episode opened, was updated
or resolved, with the round's decision and forecast (:class:`RoundChanges`);
after the batch is timed, :func:`build_alerts` turns them into
:class:`~streamer.codec.Alert` messages, ordered by event time. This is the
one place an alert is built.

An alert explains itself with ``drivers``: the channels whose score
(:attr:`~streamer.thresholds.result.ThresholdResult.channel_scores`) is above
0, each with its reading, forecast, residual, score and share of the sum of
the row's channel scores, highest share first (ties: the alert's own channel,
then channel order). At most :data:`MAX_DRIVERS` are listed, so the shares of
a device with more contributing channels sum to less than 1. A row whose
channels all score 0 lists the alert's channel alone, with share 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from streamer.alerts.episodes import alert_id
from streamer.codec import Alert, Driver, ReadingBatch
from streamer.thresholds.result import ThresholdResult

IndexArray = npt.NDArray[np.intp]
AlertEvent = Literal["open", "update", "resolve"]

# Channels an alert lists as its drivers: enough to explain a fault, while an
# alert of a device with hundreds of channels stays a small message.
MAX_DRIVERS = 5


@dataclass(frozen=True)
class RoundChanges:
    """A scored round in which episodes opened, were updated or resolved."""

    batch_rows: IndexArray  # the round's rows of the batch
    decision: ThresholdResult
    forecast: npt.NDArray[np.float64]
    opened: IndexArray  # positions in the round
    updated: IndexArray
    resolved: IndexArray
    episode_start: npt.NDArray[np.int64]
    # Per round row: the threshold method that judged it (None: every row the source's method).
    methods: Sequence[str] | None = None
    # Per round row: the model version its episode belongs to (None: every row the source's).
    # An episode opened before a model swap keeps the version, and so the id, it opened with.
    versions: Sequence[str] | None = None


@dataclass(frozen=True)
class AlertSource:
    """What every alert of a pipeline names: its channels, threshold method and model version."""

    channels: Sequence[str]
    method: str
    model_version: str


def build_alerts(changes: Sequence[RoundChanges], batch: ReadingBatch, source: AlertSource,
                 decided_at: float) -> list[Alert]:
    """Every alert event of ``changes``, sorted by event time (stable: a round's order is kept)."""
    alerts: list[Alert] = []
    for change in changes:
        events: tuple[tuple[AlertEvent, IndexArray], ...] = (
            ("open", change.opened), ("update", change.updated), ("resolve", change.resolved))
        for kind, picks in events:
            alerts.extend(_alert(kind, batch, change, pick, source, decided_at) for pick in picks.tolist())
    alerts.sort(key=lambda a: a.ts)
    return alerts


def _alert(kind: AlertEvent, batch: ReadingBatch, change: RoundChanges, pick: int, source: AlertSource,
           decided_at: float) -> Alert:
    decision = change.decision
    row = int(change.batch_rows[pick])
    channel = int(decision.channel[pick])
    device_id = batch.device_ids[row]
    actual = float(batch.values[row, channel])
    predicted = float(change.forecast[pick, channel])
    start = int(change.episode_start[pick])
    ts = int(batch.ts_ms[row])
    drivers = _drivers(source.channels, channel, decision.channel_scores[pick].tolist(),
                       batch.values[row].tolist(), change.forecast[pick].tolist())
    version = source.model_version if change.versions is None else change.versions[pick]
    return Alert(
        alert_id=alert_id(device_id, start, version),
        event=kind,
        device_id=device_id,
        ts=ts,
        episode_start_ts=start,
        channel=source.channels[channel],
        actual=actual,
        forecast=predicted,
        residual=actual - predicted,
        smoothed_residual=_finite_or_none(float(decision.smoothed[pick])),
        threshold=_finite_or_none(float(decision.threshold[pick])),
        score=float(decision.score[pick]),
        method=source.method if change.methods is None else change.methods[pick],
        model_version=version,
        processing_ms=round((decided_at - float(batch.fetched_at[row])) * 1000.0, 3),
        latency_ms=round(decided_at * 1000.0 - ts, 3),
        drivers=drivers,
    )


def _drivers(names: Sequence[str], picked: int, scores: list[float], actual: list[float],
             forecast: list[float]) -> tuple[Driver, ...]:
    """The channels behind one row's score, highest share first (see the module docstring).

    >>> [(d.channel, d.share) for d in _drivers(["a", "b", "c"], 1, [0.25, 0.75, 0.0],
    ...                                          [1.0, 2.0, 3.0], [1.0, 1.5, 3.0])]
    [('b', 0.75), ('a', 0.25)]
    >>> [(d.channel, d.share) for d in _drivers(["a", "b"], 1, [0.0, 0.0], [1.0, 2.0], [1.0, 2.0])]
    [('b', 1.0)]
    """
    total = sum(score for score in scores if score > 0)
    if total > 0:
        ranked = sorted((c for c, score in enumerate(scores) if score > 0),
                        key=lambda c: (-scores[c], c != picked, c))[:MAX_DRIVERS]
        shares = [scores[c] / total for c in ranked]
    else:
        ranked, shares = [picked], [1.0]
    return tuple(
        Driver(channel=names[c], actual=_finite_or_none(actual[c]), forecast=_finite_or_none(forecast[c]),
               residual=_finite_or_none(actual[c] - forecast[c]),
               score=scores[c] if scores[c] > 0 else 0.0,  # NaN: not judged
               share=share)
        for c, share in zip(ranked, shares, strict=True)
    )


def _finite_or_none(value: float) -> float | None:
    """``value``, or None where it is NaN or infinite (JSON has no NaN).

    >>> _finite_or_none(1.5), _finite_or_none(float("nan"))
    (1.5, None)
    """
    return value if np.isfinite(value) else None
