"""Match alerts against injected ground truth: detected, missed, false."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from streamer.codec import Alert
from streamer.simulate import InjectedAnomaly


@dataclass
class DetectionReport:
    """Per-kind detection counts and false alerts."""

    injected: dict[str, int] = field(default_factory=dict)
    detected: dict[str, int] = field(default_factory=dict)
    false_alerts: int = 0
    alerts: int = 0  # episodes opened

    def rate(self, kind: str) -> float | None:
        """Detected fraction of one kind, or None if none was injected."""
        injected = self.injected.get(kind, 0)
        return self.detected.get(kind, 0) / injected if injected else None


def match(truth: Sequence[InjectedAnomaly], alerts: Sequence[Alert], grace_ms: int) -> DetectionReport:
    """An anomaly is detected when its device opens an episode inside ``[start, end + grace]``.

    An opened episode that falls in no anomaly window of its device is a
    false alert. Only ``open`` events count: they are what pages a person.

    >>> t = [InjectedAnomaly("d", "spike", 1000, 1000, 9.0)]
    >>> a = [Alert(alert_id="x", event="open", device_id="d", ts=1000, episode_start_ts=1000,
    ...            channel="value", actual=9.0, forecast=0.0, residual=9.0, smoothed_residual=9.0,
    ...            threshold=5.0, score=1.0, method="zscore", model_version="v", processing_ms=1.0,
    ...            latency_ms=2.0)]
    >>> r = match(t, a, grace_ms=500)
    >>> r.detected, r.false_alerts
    ({'spike': 1}, 0)
    """
    windows: dict[str, list[tuple[int, int, int]]] = {}
    for index, item in enumerate(truth):
        windows.setdefault(item.device_id, []).append((item.start_ts, item.end_ts + grace_ms, index))
    hit: set[int] = set()
    false_alerts = 0
    opens = [alert for alert in alerts if alert.event == "open"]
    seen_ids: set[str] = set()
    for alert in opens:
        if alert.alert_id in seen_ids:  # a redelivered duplicate
            continue
        seen_ids.add(alert.alert_id)
        matched = [i for start, end, i in windows.get(alert.device_id, ()) if start <= alert.ts <= end]
        if matched:
            hit.update(matched)
        else:
            false_alerts += 1
    injected = Counter(item.kind for item in truth)
    detected = Counter(truth[i].kind for i in hit)
    return DetectionReport(
        injected=dict(sorted(injected.items())),
        detected={kind: detected.get(kind, 0) for kind in sorted(injected)},
        false_alerts=false_alerts,
        alerts=len(seen_ids),
    )
