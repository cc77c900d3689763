"""Prometheus series of the Alertmanager bridge, in a registry of its own (labels bounded)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from streamer.vocabulary import ALERT_RECORD_REJECTIONS, ALERTMANAGER_FAILURES, ALERTMANAGER_POSTS


class BridgeMetrics:
    """The bridge's counters and gauges.

    >>> metrics = BridgeMetrics()
    >>> metrics.posted.labels("open").inc()
    >>> metrics.registry.get_sample_value("streamer_alertmanager_alerts_posted_total", {"event": "open"})
    1.0
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        self.posted = Counter(
            "streamer_alertmanager_alerts_posted", "Alerts Alertmanager accepted, by the episode event "
            "they carried (resend: a firing episode posted again on the resend cadence).",
            ["event"], registry=self.registry)
        self.post_failures = Counter(
            "streamer_alertmanager_post_failures", "POSTs to Alertmanager that failed, by reason "
            "(unreachable and server_error are retried; rejected is a 4xx).", ["reason"],
            registry=self.registry)
        self.retries = Counter(
            "streamer_alertmanager_retries", "POSTs repeated after a backoff delay.", registry=self.registry)
        self.alerts_refused = Counter(
            "streamer_alertmanager_alerts_refused", "Alerts Alertmanager refused on their own (4xx); "
            "skipped, never retried.", registry=self.registry)
        self.records_rejected = Counter(
            "streamer_alertmanager_records_rejected", "Records of the alert topic that are not alerts, "
            "by reason; skipped.", ["reason"], registry=self.registry)
        self.firing = Gauge(
            "streamer_alertmanager_firing_episodes",
            "Episodes firing now in the partitions this bridge owns.",
            registry=self.registry)
        self.committed = Counter(
            "streamer_alertmanager_commits",
            "Offset commits after Alertmanager accepted the records' alerts.",
            registry=self.registry)
        for event in ALERTMANAGER_POSTS:
            self.posted.labels(event)
        for reason in ALERTMANAGER_FAILURES:
            self.post_failures.labels(reason)
        for rejection in ALERT_RECORD_REJECTIONS:
            self.records_rejected.labels(rejection)
