"""Alert events on the wire: what an episode change in a scored round becomes.

The pipeline records, per round, the rows whose episode opened, was updated
or resolved, with the round's decision and forecast (:class:`RoundChanges`);
after the batch is timed, :func:`build_alerts` turns them into
:class:`~streamer.codec.Alert` messages, ordered by event time. This is the
one place an alert is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from streamer.alerts.episodes import alert_id
from streamer.codec import Alert, ReadingBatch
from streamer.thresholds.result import ThresholdResult

IndexArray = npt.NDArray[np.intp]
AlertEvent = Literal["open", "update", "resolve"]


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
    return Alert(
        alert_id=alert_id(device_id, start, source.model_version),
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
        method=source.method,
        model_version=source.model_version,
        processing_ms=round((decided_at - float(batch.fetched_at[row])) * 1000.0, 3),
        latency_ms=round(decided_at * 1000.0 - ts, 3),
    )


def _finite_or_none(value: float) -> float | None:
    """``value``, or None where it is NaN or infinite (JSON has no NaN).

    >>> _finite_or_none(1.5), _finite_or_none(float("nan"))
    (1.5, None)
    """
    return value if np.isfinite(value) else None
