"""``alertmanager``: where ``streamer alertmanager`` posts alert episodes, and how."""

from __future__ import annotations

from typing import Annotated

import msgspec

from streamer.config.base import Port, PositiveFloat, PositiveInt, Section

Score = Annotated[float, msgspec.Meta(ge=0, le=1)]
# Placeholders a dashboard URL template may use (filled in per alert).
DASHBOARD_FIELDS = ("device", "channel", "alert_id")


class AlertmanagerConfig(Section, frozen=True):
    """The Alertmanager bridge: target, consumer group, cadence, retries and the alert's look."""

    # Base URL of Alertmanager (the bridge posts to <url>/api/v2/alerts);
    # `--url` overrides it. Unset: the command needs `--url`.
    url: str | None = None
    # The bridge's own consumer group on kafka.alert_topic. Unset:
    # "<kafka.group_id>-alertmanager", so it never shares offsets with the daemon.
    group_id: str | None = None
    # Firing episodes are posted again this often, each with endsAt this
    # interval times `ends_after_intervals` ahead: Alertmanager resolves an
    # alert whose endsAt passes, so a bridge that stops resolves its alerts
    # after a few missed intervals instead of leaving them firing forever.
    resend_interval_s: PositiveFloat = 60.0
    ends_after_intervals: PositiveInt = 4
    # Per HTTP request.
    timeout_s: PositiveFloat = 10.0
    # Retries while Alertmanager is unreachable or answers 5xx: exponential
    # from backoff_initial_s, capped at backoff_max_s, full jitter; without end
    # (a resolve is never dropped), and no offset is committed meanwhile.
    backoff_initial_s: PositiveFloat = 0.5
    backoff_max_s: PositiveFloat = 30.0
    # Alert records per fetch, and so the most alerts per POST.
    max_batch: PositiveInt = 500
    alertname: str = "StreamerAnomaly"
    # Severity label from the score: critical at or above the first, warning
    # at or above the second, info below (the z-score method flags at z = 5,
    # score 0.935; 0.99 is z = 13.9).
    severity_critical: Score = 0.99
    severity_warning: Score = 0.9
    # Dashboard link (the `dashboard` annotation and generatorURL), with
    # {device}, {channel} and {alert_id} filled in. Unset: no link.
    dashboard_url: str | None = None
    # /metrics of the bridge (`--metrics-port` overrides; unset: no endpoint).
    metrics_port: Port | None = None

    def __post_init__(self) -> None:
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        if self.group_id is not None and not self.group_id.strip():
            raise ValueError("group_id must not be empty (leave it unset for the default name)")
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError("backoff_initial_s must not exceed backoff_max_s")
        if self.severity_warning > self.severity_critical:
            raise ValueError("severity_warning must not exceed severity_critical")
        if not self.alertname.strip():
            raise ValueError("alertname must not be empty")
        if self.dashboard_url is not None:
            check_dashboard_url(self.dashboard_url)

    def group_name(self, kafka_group_id: str) -> str:
        """The bridge's consumer group.

        >>> AlertmanagerConfig().group_name("streamer")
        'streamer-alertmanager'
        """
        return self.group_id or f"{kafka_group_id}-alertmanager"


def check_dashboard_url(template: str) -> None:
    """Raise ``ValueError`` unless ``template`` formats with the dashboard placeholders alone.

    >>> check_dashboard_url("https://grafana/d/x?var-device={device}")
    >>> check_dashboard_url("https://grafana/{host}")
    Traceback (most recent call last):
    ...
    ValueError: dashboard_url: unknown placeholder {host}; use {device}, {channel}, {alert_id}
    """
    try:
        template.format(**dict.fromkeys(DASHBOARD_FIELDS, ""))
    except KeyError as exc:
        raise ValueError(f"dashboard_url: unknown placeholder {{{exc.args[0]}}}; use "
                         + ", ".join(f"{{{name}}}" for name in DASHBOARD_FIELDS)) from None
    except (IndexError, ValueError) as exc:
        raise ValueError(f"dashboard_url: not a valid template ({exc})") from None
