"""Event-level detection metrics: labelled anomaly sequences against detected ones.

The convention of Hundman et al. (2018): a labelled sequence is a true
positive when at least one detected sequence overlaps it (once per label, no
matter how many overlap); a detected sequence that overlaps no label is a
false positive; a labelled sequence that nothing overlaps is a false negative.
Ranges are inclusive ``(first, last)`` positions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamer.codec import Alert

Span = tuple[int, int]


@dataclass(frozen=True)
class EventCounts:
    """True positives, false positives and false negatives of one or more series."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: EventCounts) -> EventCounts:
        return EventCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 0 when nothing was detected."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """TP / (TP + FN); 0 when nothing was labelled."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float]:
        """Counts and rates, for JSON."""
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": round(self.precision, 4),
                "recall": round(self.recall, 4), "f1": round(self.f1, 4)}


def overlaps(a: Span, b: Span) -> bool:
    """Whether two inclusive ranges share a position.

    >>> overlaps((1, 3), (3, 5)), overlaps((1, 2), (3, 5))
    (True, False)
    """
    return a[0] <= b[1] and b[0] <= a[1]


def count_events(labels: Sequence[Span], detected: Sequence[Span]) -> EventCounts:
    """Event-level counts for one series.

    >>> count_events([(10, 20), (50, 60)], [(15, 16), (18, 30), (80, 90)])
    EventCounts(tp=1, fp=1, fn=1)
    """
    tp = sum(1 for label in labels if any(overlaps(label, found) for found in detected))
    fp = sum(1 for found in detected if not any(overlaps(label, found) for label in labels))
    return EventCounts(tp=tp, fp=fp, fn=len(labels) - tp)


def total(counts: Iterable[EventCounts]) -> EventCounts:
    """Sum of counts."""
    result = EventCounts()
    for item in counts:
        result = result + item
    return result


def episode_spans(
    alerts: Iterable[Alert], ts_ms: Mapping[str, npt.NDArray[np.int64]]
) -> dict[str, list[Span]]:
    """Alert episodes as inclusive row ranges of each device's series.

    An episode runs from the reading that opened it to the one that resolved
    it, or to the end of the series if it never resolved. Rows are found by
    event time in ``ts_ms`` (each device's timestamps, ascending).
    """
    spans: dict[str, list[Span]] = {}
    opened: dict[str, int] = {}
    for alert in sorted(alerts, key=lambda a: (a.device_id, a.ts)):
        times = ts_ms[alert.device_id]
        row = int(np.searchsorted(times, alert.ts))
        if alert.event == "open":
            opened[alert.device_id] = int(np.searchsorted(times, alert.episode_start_ts))
        elif alert.event == "resolve" and alert.device_id in opened:
            spans.setdefault(alert.device_id, []).append((opened.pop(alert.device_id), row))
    for device, start in opened.items():
        spans.setdefault(device, []).append((start, len(ts_ms[device]) - 1))
    return spans


def span_mask(spans: Sequence[Span], n_rows: int) -> npt.NDArray[np.bool_]:
    """Which of ``range(n_rows)`` lie inside at least one of ``spans`` (inclusive).

    >>> span_mask([(0, 2), (1, 3), (6, 9)], 8).astype(int).tolist()
    [1, 1, 1, 1, 0, 0, 1, 1]
    """
    inside = np.zeros(n_rows, dtype=np.bool_)
    for first, last in spans:
        inside[max(first, 0) : last + 1] = True
    return inside


def clip_spans(spans: Sequence[Span], first: int, last: int, shift: int = 0) -> list[Span]:
    """The parts of ``spans`` inside ``[first, last]``, moved by ``-shift``.

    >>> clip_spans([(0, 5), (8, 12), (20, 30)], 4, 25, shift=4)
    [(0, 1), (4, 8), (16, 21)]
    """
    return [(max(a, first) - shift, min(b, last) - shift) for a, b in spans if a <= last and b >= first]
