"""Which readings retraining leaves out: alert episodes and what operators reported as anomalous.

A model retrained on its own anomalies learns to forecast them, and then no
longer flags them. So every reading of a device inside one of these windows,
widened by a margin on both sides, is left out:

- an alert episode of ``kafka.alert_topic``: from its ``episode_start_ts`` to
  the event time of its last event (an episode with no ``resolve`` read is
  still open: everything of that device from its start on is left out);
- an anomaly operators reported ``missed`` (``start_ts`` .. ``end_ts``).

An episode operators marked ``confirmed`` is out anyway. One marked
``false_alarm`` (and never ``confirmed``) stays in when
``retrain.include_false_alarms`` is set: an operator said it was normal.
Exclusion is per device, over every channel.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from streamer.codec import Alert
from streamer.feedback.messages import Feedback

# An episode that has not resolved yet ends in the future, past any reading.
OPEN_END_MS = np.iinfo(np.int64).max // 2
Why = Literal["alert", "missed"]


@dataclass(frozen=True)
class Window:
    """Readings of ``device_id`` with ``start_ms <= ts <= end_ms`` are left out (margin included)."""

    device_id: str
    start_ms: int
    end_ms: int
    why: Why


@dataclass(frozen=True)
class Episode:
    """An alert episode gathered from its events."""

    alert_id: str
    device_id: str
    start_ms: int
    end_ms: int  # event time of its last event read; OPEN_END_MS while unresolved
    model_version: str


def episodes(alerts: Iterable[Alert]) -> list[Episode]:
    """Alert events grouped into episodes by ``alert_id``, in order of first event.

    >>> from streamer.codec import Alert
    >>> def event(kind, ts):
    ...     return Alert(alert_id="a", event=kind, device_id="d", ts=ts, episode_start_ts=10, channel="v",
    ...                  actual=0.0, forecast=0.0, residual=0.0, smoothed_residual=None, threshold=None,
    ...                  score=1.0, method="zscore", model_version="m", processing_ms=0.0, latency_ms=0.0)
    >>> [(e.start_ms, e.end_ms) for e in episodes([event("open", 10), event("resolve", 40)])]
    [(10, 40)]
    """
    first: dict[str, Alert] = {}
    last_ts: dict[str, int] = {}
    resolved: set[str] = set()
    for alert in alerts:
        first.setdefault(alert.alert_id, alert)
        last_ts[alert.alert_id] = max(last_ts.get(alert.alert_id, alert.ts), alert.ts)
        if alert.event == "resolve":
            resolved.add(alert.alert_id)
    return [Episode(alert_id, alert.device_id, alert.episode_start_ts,
                    last_ts[alert_id] if alert_id in resolved else int(OPEN_END_MS), alert.model_version)
            for alert_id, alert in first.items()]


def verdicts(feedback: Iterable[Feedback]) -> dict[str, Literal["confirmed", "false_alarm"]]:
    """Operators' verdict per alert id; ``confirmed`` wins over ``false_alarm``.

    >>> verdicts([Feedback(kind="false_alarm", device_id="d", alert_id="a"),
    ...           Feedback(kind="confirmed", device_id="d", alert_id="a")])
    {'a': 'confirmed'}
    """
    found: dict[str, Literal["confirmed", "false_alarm"]] = {}
    for message in feedback:
        if message.alert_id is None:
            continue
        if message.kind == "confirmed":
            found[message.alert_id] = "confirmed"
        elif message.kind == "false_alarm":
            found.setdefault(message.alert_id, "false_alarm")
    return found


def exclusion_windows(
    alert_episodes: Iterable[Episode],
    feedback: Iterable[Feedback],
    *,
    margin_ms: int,
    include_false_alarms: bool = False,
) -> list[Window]:
    """The windows to leave out (see the module docstring).

    >>> from streamer.feedback.messages import Feedback
    >>> missed = Feedback(kind="missed", device_id="d", start_ts=100, end_ts=200)
    >>> exclusion_windows([], [missed], margin_ms=10)
    [Window(device_id='d', start_ms=90, end_ms=210, why='missed')]
    """
    messages = list(feedback)
    verdict = verdicts(messages)
    windows = []
    for episode in alert_episodes:
        if include_false_alarms and verdict.get(episode.alert_id) == "false_alarm":
            continue
        end = episode.end_ms if episode.end_ms >= OPEN_END_MS else episode.end_ms + margin_ms
        windows.append(Window(episode.device_id, episode.start_ms - margin_ms, end, "alert"))
    windows.extend(Window(message.device_id, message.start_ts - margin_ms, message.end_ts + margin_ms,
                          "missed")
                   for message in messages
                   if message.kind == "missed" and message.device_id is not None
                   and message.start_ts is not None and message.end_ts is not None)
    return windows


def excluded(device_ids: npt.NDArray[np.str_], ts_ms: npt.NDArray[np.int64], windows: Iterable[Window]
             ) -> tuple[npt.NDArray[np.bool_], Counter[Why]]:
    """Which rows fall in a window, and how many rows each kind of window took (first kind wins).

    >>> ids, ts = np.array(["a", "a", "b", "a"]), np.array([5, 15, 15, 40])
    >>> mask, counts = excluded(ids, ts, [Window("a", 10, 20, "alert"), Window("a", 40, 50, "missed")])
    >>> mask.tolist(), dict(counts)
    ([False, True, False, True], {'alert': 1, 'missed': 1})
    """
    by_device: dict[str, list[Window]] = {}
    for window in windows:
        by_device.setdefault(window.device_id, []).append(window)
    mask = np.zeros(len(ts_ms), dtype=bool)
    counts: Counter[Why] = Counter()
    if not by_device or not len(ts_ms):
        return mask, counts
    names, codes = np.unique(device_ids, return_inverse=True)
    for code, name in enumerate(names.tolist()):
        device_windows = by_device.get(name)
        if not device_windows:
            continue
        rows = np.flatnonzero(codes == code)
        times = ts_ms[rows]
        for window in device_windows:
            inside = (times >= window.start_ms) & (times <= window.end_ms) & ~mask[rows]
            counts[window.why] += int(inside.sum())
            mask[rows[inside]] = True
    return mask, counts

