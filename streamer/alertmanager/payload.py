"""An alert episode as an Alertmanager v2 alert: labels, annotations, severity, startsAt and endsAt.

Alertmanager identifies an alert by its label set, so the labels of an
episode are taken from its *first* event (the ``open``) and never change:
``severity`` is fixed when the episode opens, and ``channel`` is the channel
that opened it. An ``update`` refreshes the annotations (score, values,
drivers) of the same alert; a ``resolve`` posts the same labels with
``endsAt`` at the resolve. ``alert_id``, the episode's deterministic id, is
a label, so each episode is one alert in Alertmanager and one group when
routes group by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from streamer.alertmanager.events import AlertEvent, Driver
from streamer.config import AlertmanagerConfig

Severity = Literal["critical", "warning", "info"]
# Drivers named in the `drivers` annotation, largest share first.
MAX_DRIVERS = 3


@dataclass(frozen=True)
class AlertStyle:
    """How an episode is labelled: the alertname, the severity bands, the dashboard link."""

    alertname: str = "StreamerAnomaly"
    severity_critical: float = 0.99
    severity_warning: float = 0.9
    dashboard_url: str | None = None

    @classmethod
    def from_config(cls, config: AlertmanagerConfig) -> AlertStyle:
        """The style the ``alertmanager`` config section describes."""
        return cls(config.alertname, config.severity_critical, config.severity_warning,
                   config.dashboard_url)

    def severity(self, score: float) -> Severity:
        """The severity band of ``score``.

        >>> style = AlertStyle()
        >>> style.severity(0.995), style.severity(0.935), style.severity(0.5)
        ('critical', 'warning', 'info')
        """
        if score >= self.severity_critical:
            return "critical"
        if score >= self.severity_warning:
            return "warning"
        return "info"

    def dashboard(self, event: AlertEvent) -> str | None:
        """The dashboard link of an episode, or None without a template."""
        if self.dashboard_url is None:
            return None
        alert = event.alert
        return self.dashboard_url.format(device=alert.device_id, channel=alert.channel,
                                         alert_id=alert.alert_id)


def labels_of(first: AlertEvent, style: AlertStyle) -> dict[str, str]:
    """The label set of an episode, from its first event."""
    alert = first.alert
    return {
        "alertname": style.alertname,
        "alert_id": alert.alert_id,
        "device": alert.device_id,
        "channel": alert.channel,
        "severity": style.severity(alert.score),
        "model_version": alert.model_version,
    }


def annotations_of(first: AlertEvent, latest: AlertEvent, style: AlertStyle) -> dict[str, str]:
    """The annotations of an episode: the latest event's figures, the link, the dedup key."""
    alert = latest.alert
    notes = {
        "summary": (f"{alert.device_id} {alert.channel}: actual {_number(alert.actual)}, "
                    f"forecast {_number(alert.forecast)} (score {_number(alert.score)})"),
        "actual": _number(alert.actual),
        "forecast": _number(alert.forecast),
        "residual": _number(alert.residual),
        "score": _number(alert.score),
        "threshold": "" if alert.threshold is None else _number(alert.threshold),
        "method": alert.method,
        "event": alert.event,
        # The PagerDuty-style key: one incident per episode.
        "dedup_key": alert.alert_id,
        # What the operator runs to answer it (or `confirmed`): README, Operators in the loop.
        "feedback": f"streamer feedback false-alarm --device {alert.device_id} --alert-id {alert.alert_id}",
    }
    link = style.dashboard(first)
    if link is not None:
        notes["dashboard"] = link
    drivers = latest.drivers or first.drivers
    if drivers:
        notes["drivers"] = drivers_summary(drivers)
    return notes


def to_alertmanager(first: AlertEvent, latest: AlertEvent, style: AlertStyle, *,
                    now_ms: int, firing_for_ms: int) -> dict[str, Any]:
    """The v2 alert for an episode: firing until ``now_ms + firing_for_ms``, or resolved.

    Args:
        first: The episode's first event (its labels).
        latest: Its latest event; a ``resolve`` ends the alert at its event
            time (not after now, not before the start).
        style: Labels and links.
        now_ms: Wall clock, epoch ms.
        firing_for_ms: How far ahead a firing alert's endsAt lies.
    """
    starts = min(first.alert.episode_start_ts, now_ms)
    if latest.alert.event == "resolve":
        ends = max(min(latest.alert.ts, now_ms), starts)
    else:
        ends = now_ms + firing_for_ms
    payload: dict[str, Any] = {
        "labels": labels_of(first, style),
        "annotations": annotations_of(first, latest, style),
        "startsAt": rfc3339(starts),
        "endsAt": rfc3339(ends),
    }
    link = style.dashboard(first)
    if link is not None:
        payload["generatorURL"] = link
    return payload


def drivers_summary(drivers: Sequence[Driver]) -> str:
    """The largest drivers of an anomaly in a line.

    >>> drivers_summary([Driver("temp", 0.25, 80.0, 70.0), Driver("vibration", 0.75)])
    'vibration 75%; temp 25% (actual 80, forecast 70)'
    """
    ranked = sorted(drivers, key=lambda d: -(d.share or 0.0))[:MAX_DRIVERS]
    parts = []
    for driver in ranked:
        text = driver.channel
        if driver.share is not None:
            text += f" {driver.share:.0%}"
        if driver.actual is not None and driver.forecast is not None:
            text += f" (actual {_number(driver.actual)}, forecast {_number(driver.forecast)})"
        parts.append(text)
    return "; ".join(parts)


def rfc3339(epoch_ms: int) -> str:
    """Epoch milliseconds as the RFC 3339 time Alertmanager reads.

    >>> rfc3339(1700000000123)
    '2023-11-14T22:13:20.123Z'
    """
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _number(value: float) -> str:
    return f"{value:.6g}"
