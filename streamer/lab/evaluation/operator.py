"""A simulated operator for ``streamer evaluate ... --operator DELAY``: every alert answered from the labels.

The operator watches a replay's alerts as they are emitted (per device, in
reading order) and answers as a diligent operator with the labels would:

- ``DELAY`` readings of the device after an episode opens (after the device's
  reading at row ``open + DELAY`` is scored, before the next one), it sends
  ``confirmed`` when the episode so far (its first row to that row, or to
  the row that resolved it) overlaps a labelled anomaly of that device, and
  ``false_alarm`` otherwise. Overlap of inclusive row ranges is the rule
  every corpus' scoring uses to call an alert episode a true positive: the
  telemanom protocol's sequence overlap, NAB's windows, SKAB's anomaly rows
  (:func:`streamer.lab.evaluation.events.overlaps`). The operator judges
  what it can see at the time: an episode that opens before a labelled
  anomaly starts and is answered before it starts is a false alarm.
- ``DELAY`` readings after a labelled anomaly's last row, it sends ``missed``
  for it (``start_ts``/``end_ts`` of its first and last rows, every channel)
  unless an episode has overlapped it by then.

Answers and reports due after a device's last reading are never sent.

**Interleaving.** :func:`streamer.lab.evaluation.replay.replay` asks the
operator (:meth:`Operator.limit`) for the last fleet row a micro-batch may
reach, and cuts its batches at the end of that row; after each scored batch
it hands the batch's alerts to :meth:`Operator.observe` and applies the
messages now due with ``ScoringPipeline.apply_feedback`` before the next
batch. The limit is the earliest row a pending message is due at, and at most
``DELAY`` rows past the rows already scored (an episode opened in the next
batch is answered no sooner than ``DELAY`` rows later): every message is
applied exactly after the reading it is due at, never at a later batch
boundary, and batches hold at most ``DELAY + 1`` rows of the fleet.

**Figures** (:func:`summary`): precision, recall, F1 and false positives as
each corpus' protocol counts them; see the corpus' runner for the
definitions (telemanom: labelled sequences and alert episodes; NAB: windows
and alert episodes after the probationary period; SKAB: test rows).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.codec import Alert
from streamer.feedback.messages import Feedback, new_feedback
from streamer.lab.evaluation.events import Span, overlaps
from streamer.lab.evaluation.replay import Series

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, order=True)
class _Due:
    """A message due after the device's reading at ``row`` (ordered by row, then creation)."""

    row: int
    sequence: int
    device: int
    # An answer: the episode's alert id and first row; a report: the window's index.
    alert_id: str = ""
    start: int = 0
    window: int = -1


class Operator:
    """Answers every alert and reports every missed anomaly of ``series``, ``delay`` readings later.

    Args:
        series: The replayed devices (rows are positions in these series).
        labels: Labelled anomalies per device id, inclusive row ranges
            (devices without an entry have none).
        delay: Readings of the device between an alert opening (or a labelled
            anomaly ending) and the operator's message; at least 1.

    Raises:
        ValueError: ``delay`` below 1, or labels for a device not in ``series``.
    """

    def __init__(self, series: Sequence[Series], labels: Mapping[str, Sequence[Span]], delay: int) -> None:
        if delay < 1:
            raise ValueError(f"the operator's delay must be at least 1 reading, got {delay}")
        self.delay = delay
        self._index = {item.device_id: index for index, item in enumerate(series)}
        unknown = sorted(set(labels) - set(self._index))
        if unknown:
            raise ValueError(f"labels for devices not replayed: {', '.join(unknown[:5])}")
        self._ts = [item.ts_ms for item in series]
        self._ids = [item.device_id for item in series]
        self._windows = [sorted(labels.get(item.device_id, ())) for item in series]
        self._detected: list[set[int]] = [set() for _ in series]
        self._open: list[tuple[str, int] | None] = [None] * len(series)
        self._resolved: dict[str, int] = {}  # alert id -> the row that resolved its episode
        self._due: list[_Due] = []
        self._sequence = 0
        self._scored_through = -1  # the highest fleet row fed so far
        self.sent: Counter[str] = Counter()  # messages handed out, by kind
        self.unsent = 0  # answers and reports due after their device's last reading
        for device, windows in enumerate(self._windows):
            for window, (_, last) in enumerate(windows):
                self._schedule(_Due(last + delay, 0, device, window=window))

    def _schedule(self, due: _Due) -> None:
        if due.row >= len(self._ts[due.device]):
            self.unsent += 1
            return
        self._sequence += 1
        heapq.heappush(self._due, _Due(due.row, self._sequence, due.device, due.alert_id, due.start,
                                       due.window))

    def limit(self) -> int:
        """The last fleet row the next micro-batch may hold: the earliest due row, at most ``delay`` ahead."""
        ahead = self._scored_through + self.delay
        return min(self._due[0].row, ahead) if self._due else ahead

    def observe(self, alerts: Sequence[Alert], fed: Int64Array) -> list[Feedback]:
        """Take a scored batch's alerts; return the messages now due, in due order.

        Args:
            alerts: The batch's alerts, in emission order.
            fed: Per series, the last row fed to the pipeline so far (-1: none).
        """
        for alert in alerts:
            device = self._index[alert.device_id]
            times = self._ts[device]
            row = int(np.searchsorted(times, alert.ts))
            if alert.event == "open":
                start = int(np.searchsorted(times, alert.episode_start_ts))
                self._open[device] = (alert.alert_id, start)
                self._schedule(_Due(row + self.delay, 0, device, alert.alert_id, start))
            elif alert.event == "resolve":
                opened = self._open[device]
                if opened is not None:
                    self._resolved[opened[0]] = row
                    self._mark_detected(device, opened[1], row)
                self._open[device] = None
        self._scored_through = max(self._scored_through, int(fed.max(initial=-1)))
        messages: list[Feedback] = []
        waiting: list[_Due] = []
        while self._due and self._due[0].row <= self._scored_through:
            due = heapq.heappop(self._due)
            if fed[due.device] < due.row:  # the batch ended inside the row, before this device
                waiting.append(due)
                continue
            message = self._message(due)
            if message is not None:
                messages.append(message)
                self.sent[message.kind] += 1
        for due in waiting:
            heapq.heappush(self._due, due)
        return messages

    def _mark_detected(self, device: int, first: int, last: int) -> None:
        for window, span in enumerate(self._windows[device]):
            if overlaps(span, (first, last)):
                self._detected[device].add(window)

    def _message(self, due: _Due) -> Feedback | None:
        """The message ``due`` stands for, or None: a labelled anomaly that was detected after all."""
        device_id = self._ids[due.device]
        if due.window < 0:
            end = self._resolved.pop(due.alert_id, due.row)
            hit = any(overlaps(window, (due.start, end)) for window in self._windows[due.device])
            return new_feedback("confirmed" if hit else "false_alarm", device_id=device_id,
                                alert_id=due.alert_id)
        first, last = self._windows[due.device][due.window]
        opened = self._open[due.device]
        if opened is not None:  # an episode still open since before the window's end
            self._mark_detected(due.device, opened[1], due.row)
        if due.window in self._detected[due.device]:
            return None
        times = self._ts[due.device]
        return new_feedback("missed", device_id=device_id, start_ts=int(times[first]),
                            end_ts=int(times[last]))


def summary(*, tp: int, fp: int, fn: int, **extra: Any) -> dict[str, Any]:
    """Precision, recall, F1 and false positives from counts, for the ``operator`` JSON section.

    >>> summary(tp=3, fp=1, fn=1)
    {'precision': 0.75, 'recall': 0.75, 'f1': 0.75, 'false_positives': 1, 'tp': 3, 'fn': 1}
    """
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "false_positives": fp, "tp": tp, "fn": fn, **extra}


def comparison(delay: int, without: Mapping[str, Any], with_operator: Mapping[str, Any], *,
               feedback: Mapping[str, int]) -> dict[str, Any]:
    """The ``operator`` JSON section: both runs' figures and the feedback applied or rejected, by kind."""
    return {"delay": delay, "without": dict(without), "with": dict(with_operator),
            "feedback": dict(sorted(feedback.items()))}


def format_comparison(section: Mapping[str, Any], label: str) -> str:
    """A plain-text table of an ``operator`` section (``label`` names what is counted).

    >>> print(format_comparison({"delay": 10, "without": summary(tp=3, fp=4, fn=1),
    ...                          "with": summary(tp=3, fp=1, fn=1)}, "episodes"))
    operator (answers after 10 readings), episodes:
                  precision  recall      F1    FP
    without           0.429   0.750   0.545     4
    with              0.750   0.750   0.750     1
    """
    lines = [f"operator (answers after {section['delay']} readings), {label}:",
             f"{'':12}{'precision':>11}{'recall':>8}{'F1':>8}{'FP':>6}"]
    for name in ("without", "with"):
        row = section[name]
        lines.append(f"{name:12}{row['precision']:>11.3f}{row['recall']:>8.3f}{row['f1']:>8.3f}"
                     f"{row['false_positives']:>6}")
    return "\n".join(lines)
