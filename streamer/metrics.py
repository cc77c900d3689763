"""Prometheus metrics of the daemon.

Labels are bounded: reason, event, method, partition. A device id is never a
label. Per-reading latencies are recorded in bulk (one numpy histogram per
batch) instead of one ``observe()`` per reading, which would cost a Python
call per reading on the hot path.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from streamer import __version__
from streamer.vocabulary import (
    COMMIT_OUTCOMES,
    FEEDBACK_REJECTION_REASONS,
    MODEL_REFUSAL_REASONS,
    MODEL_ROLES,
    OFFSET_RESET_REASONS,
    PAUSE_CAUSES,
    PAUSE_REASONS,
    REJECTION_REASONS,
    RESTORE_OUTCOMES,
    SUPPRESSION_REASONS,
)

# Event-time latencies: from a millisecond on loopback up to a minute for
# devices that buffer before sending.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
MODEL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536)
# Scoring pauses: the budget is 20 ms at 100K devices (benchmarks/performance.md); the
# long tail shows what an unsliced job would cost.
PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Restoring one partition: from an empty state topic (milliseconds) to a long
# replay of a busy partition (minutes).
RESTORE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class BulkHistogram(Collector):
    """A label-less histogram that records whole arrays of observations at once.

    >>> registry = CollectorRegistry()
    >>> hist = BulkHistogram("demo_seconds", "Demo.", (0.1, 1.0), registry)
    >>> hist.observe_many(np.array([0.05, 0.5, 5.0]))
    >>> registry.get_sample_value("demo_seconds_bucket", {"le": "1.0"})
    2.0
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: npt.NDArray[np.float64]) -> None:
        """Record every value of ``values``."""
        if values.size == 0:
            return
        # side="left": a value equal to a bound falls in that bound's bucket (le).
        index = np.searchsorted(self.bounds, values, side="left")
        counts = np.bincount(index, minlength=len(self.bounds) + 1)
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def quantile(self, q: float) -> float | None:
        """Estimate a quantile by linear interpolation inside its bucket (as PromQL does).

        >>> registry = CollectorRegistry()
        >>> hist = BulkHistogram("q_seconds", "Demo.", (1.0, 2.0), registry)
        >>> hist.observe_many(np.array([0.5, 1.5, 1.5, 1.5]))
        >>> hist.quantile(0.5)
        1.3333333333333333
        """
        with self._lock:
            counts = self._counts.copy()
        total = int(counts.sum())
        if total == 0:
            return None
        cumulative = np.cumsum(counts)
        rank = q * total
        bucket = int(np.searchsorted(cumulative, rank, side="left"))
        if bucket >= len(self.bounds):  # in +Inf: report the highest finite bound
            return float(self.bounds[-1])
        upper = float(self.bounds[bucket])
        lower = float(self.bounds[bucket - 1]) if bucket > 0 else 0.0
        below = float(cumulative[bucket - 1]) if bucket > 0 else 0.0
        inside = float(counts[bucket])
        return lower + (upper - lower) * (rank - below) / inside if inside else upper

    def collect(self) -> Iterable[Metric]:
        """Cumulative buckets in the Prometheus exposition format."""
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        labels = [_bound_label(b) for b in self.bounds.tolist()] + ["+Inf"]
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], list(zip(labels, [float(c) for c in cumulative], strict=True)), total)
        yield family

    def describe(self) -> Iterable[Metric]:
        """Declared without samples, so registration checks names only."""
        yield HistogramMetricFamily(self.name, self.documentation)


def _bound_label(bound: float) -> str:
    return repr(float(bound))


class Metrics:
    """Every metric the daemon exports, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.info = Info("streamer", "Build and model of this daemon.", registry=r)
        self.consumed = Counter("streamer_readings_consumed", "Records fetched from the input topic.",
                                registry=r)
        self.scored = Counter("streamer_readings_scored", "Readings scored against a threshold.",
                              registry=r)
        self.warmup = Counter("streamer_readings_warmup",
                              "Readings accepted into state while their device warms up (not scored).",
                              registry=r)
        self.rejected = Counter("streamer_readings_rejected",
                                "Readings rejected and sent to the dead-letter topic, by reason.",
                                ["reason"], registry=r)
        for rejection in REJECTION_REASONS:
            self.rejected.labels(rejection)
        self.alerts = Counter("streamer_alerts", "Alert events acknowledged by the broker.",
                              ["event", "method"], registry=r)
        self.event_to_alert = Histogram(
            "streamer_event_to_alert_seconds",
            "Event timestamp of the reading to the broker's acknowledgement of its alert.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.event_to_decision = BulkHistogram(
            "streamer_event_to_decision_seconds",
            "Event timestamp of each reading to its scoring decision.", LATENCY_BUCKETS, r)
        self.consume_to_decision = BulkHistogram(
            "streamer_consume_to_decision_seconds",
            "Fetch of each reading from Kafka to its scoring decision.", LATENCY_BUCKETS, r)
        self.batch_size = Histogram("streamer_batch_size", "Readings per scored micro-batch.",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_capacity = Gauge("streamer_batch_capacity",
                                    "batching.max_batch: the size at which a micro-batch is flushed.",
                                    registry=r)
        self.batch_seconds = Histogram("streamer_batch_seconds",
                                       "Wall time to score one micro-batch (all stages).",
                                       buckets=MODEL_BUCKETS, registry=r)
        self.model_seconds = Histogram("streamer_model_seconds",
                                       "Predictor time (forecast and state update) per micro-batch.",
                                       buckets=MODEL_BUCKETS, registry=r)
        self.devices = Gauge("streamer_devices_tracked", "Devices with state in this process.",
                             registry=r)
        self.devices_warming = Gauge("streamer_devices_warming_up",
                                     "Tracked devices with fewer readings than thresholds.warmup.",
                                     registry=r)
        self.episodes_open = Gauge("streamer_alert_episodes_open", "Devices with an open alert episode.",
                                   registry=r)
        self.lag = Gauge("streamer_consumer_lag", "Records behind the partition's end offset.",
                         ["partition"], registry=r)
        self.commits = Counter("streamer_commits", "Offset commits, by outcome.", ["outcome"], registry=r)
        for commit in COMMIT_OUTCOMES:
            self.commits.labels(commit)
        self.last_commit = Gauge("streamer_last_commit_timestamp_seconds",
                                 "Wall-clock time of the last successful offset commit.", registry=r)
        self.rebalances = Counter("streamer_rebalances", "Partition assignments received.", registry=r)
        self.assigned = Gauge("streamer_partitions_assigned", "Input partitions owned.", registry=r)
        self.loop_lag = Gauge("streamer_event_loop_lag_seconds",
                              "How late the event loop ran a timer it was asked to run.", registry=r)
        self.scoring_pause = Histogram(
            "streamer_scoring_pause_seconds",
            "Time the scorer was held by work other than scoring batches (batches waited), by cause.",
            ["cause"], buckets=PAUSE_BUCKETS, registry=r)
        for cause in PAUSE_CAUSES:
            self.scoring_pause.labels(cause)
        self.scoring_pause_longest = Gauge(
            "streamer_scoring_pause_longest_seconds",
            "Longest scoring pause that ended in the current or the previous metrics.refresh_interval_s.",
            registry=r)
        self.queue_depth = Gauge("streamer_queue_batches", "Fetched batches waiting to be scored.",
                                 registry=r)
        self.queue_readings = Gauge("streamer_queue_readings",
                                    "Fetched readings waiting to be scored (backpressure acts on this).",
                                    registry=r)
        self.partitions_paused = Gauge(
            "streamer_partitions_paused",
            "Assigned input partitions not being fetched, by reason (a partition may have both).",
            ["reason"], registry=r)
        for pause in PAUSE_REASONS:
            self.partitions_paused.labels(pause)
        self.backpressure_pauses = Counter(
            "streamer_backpressure_pauses",
            "Times every partition was paused because batching.pause_high readings were queued.",
            registry=r)
        self.offset_resets = Counter(
            "streamer_offset_resets",
            "Partition positions reset to kafka.auto_offset_reset, by reason.", ["reason"], registry=r)
        for reset in OFFSET_RESET_REASONS:
            self.offset_resets.labels(reset)
        self.broker_contact = Gauge(
            "streamer_broker_last_contact_timestamp_seconds",
            "Wall-clock time the brokers last answered the daemon's probe.", registry=r)
        self.ready = Gauge("streamer_ready", "1 when the daemon is consuming and scoring.", registry=r)
        self.state_snapshots = Counter("streamer_state_snapshots",
                                       "Device snapshots acknowledged by the state topic.", registry=r)
        self.state_snapshot_failures = Counter(
            "streamer_state_snapshot_failures",
            "Snapshot rounds whose writes were not acknowledged (devices retried next round).",
            registry=r)
        self.state_snapshot_round_seconds = Histogram(
            "streamer_state_snapshot_round_seconds",
            "Time to snapshot one round of changed devices, slice after slice between batches.",
            buckets=RESTORE_BUCKETS, registry=r)
        self.state_restored = Counter(
            "streamer_state_restored_devices",
            "Devices found on the state topic at assignment, by outcome: restored, stale "
            "(stamped beyond the committed offset: ignored), mismatch (other layout: ignored); rebuilt "
            "counts the restored ones of another model (forecaster rebuilt from the ring buffer).",
            ["outcome"], registry=r)
        for restore in RESTORE_OUTCOMES:
            self.state_restored.labels(restore)
        self.state_replayed = Counter(
            "streamer_state_replayed_readings",
            "Input readings replayed into restored state (alerts suppressed).", registry=r)
        self.state_restore_seconds = Histogram(
            "streamer_state_restore_seconds",
            "Time to restore one assigned partition (read snapshots, apply, replay).",
            buckets=RESTORE_BUCKETS, registry=r)
        self.state_cold_partitions = Counter(
            "streamer_state_cold_partitions",
            "Assigned partitions whose restore failed or timed out; their devices warm up again.",
            registry=r)

        self.model_swaps = Counter(
            "streamer_model_swaps",
            "Registry versions taken into use while running, by role: current (swapped in "
            "between two batches) or candidate (scored in shadow).",
            ["role"], registry=r)
        self.model_refusals = Counter(
            "streamer_model_refusals",
            "Registry versions refused (the running model stays), by role and reason.",
            ["role", "reason"], registry=r)
        for role in MODEL_ROLES:
            self.model_swaps.labels(role)
            for refusal in MODEL_REFUSAL_REASONS:
                self.model_refusals.labels(role, refusal)
        self.model_swap_seconds = Histogram(
            "streamer_model_swap_seconds",
            "From a new version seen in the registry to scoring with it (load, checks, rebuilding "
            "every device's forecaster state from its ring buffer between batches).",
            buckets=RESTORE_BUCKETS, registry=r)
        self.model_version = Gauge(
            "streamer_model_version_info",
            "1 for the model version each role runs (current, candidate in shadow).",
            ["role", "version"], registry=r)
        self._model_versions: dict[str, str] = {}
        self.shadow_scored = Counter(
            "streamer_shadow_scored_readings",
            "Readings the candidate scored in shadow (a share of devices: predictor.lstm.shadow.fraction).",
            registry=r)
        self.shadow_flags = Counter(
            "streamer_shadow_flags",
            "Readings the candidate scored that either model flagged, by agreement: both, "
            "current_only, candidate_only.",
            ["agreement"], registry=r)
        for agreement in ("both", "current_only", "candidate_only"):
            self.shadow_flags.labels(agreement)
        self.shadow_alerts = Counter(
            "streamer_shadow_alerts",
            "Alert events the candidate raised in shadow (on kafka.shadow_alert_topic), by event.",
            ["event"], registry=r)
        for shadow_event in ("open", "update", "resolve"):
            self.shadow_alerts.labels(shadow_event)
        self.shadow_feedback = Counter(
            "streamer_shadow_feedback",
            "Operator answers to the running model's alerts on devices the candidate judges, by kind "
            "(false_alarm, confirmed) and whether the candidate flagged that episode too (flagged, silent): "
            "the candidate's precision as operators see it.",
            ["kind", "candidate"], registry=r)

        self.feedback_applied = Counter(
            "streamer_feedback_applied",
            "Operator feedback messages applied, by kind, threshold method and model version "
            "(confirmed / (confirmed + false_alarm) is the precision operators see).",
            ["kind", "method", "model_version"], registry=r)
        self.feedback_rejected = Counter(
            "streamer_feedback_rejected",
            "Operator feedback messages that changed nothing (sent to the dead-letter topic), by reason.",
            ["reason"], registry=r)
        for feedback_reason in FEEDBACK_REJECTION_REASONS:
            self.feedback_rejected.labels(feedback_reason)
        self.suppressed = Counter(
            "streamer_suppressed_flags",
            "Flagged readings that raised no alert (operator mute, feedback, rules), by reason.",
            ["reason"], registry=r)
        for suppression in SUPPRESSION_REASONS:
            self.suppressed.labels(suppression)

    def set_build(self, *, predictor: str, model_version: str, method: str) -> None:
        """Publish what this daemon runs."""
        self.info.info({"version": __version__, "predictor": predictor,
                        "model_version": model_version, "method": method})
        self.set_model("current", model_version)

    def set_model(self, role: str, version: str | None) -> None:
        """Publish the version ``role`` runs now (None: none)."""
        shown = self._model_versions.pop(role, None)
        if shown is not None:
            self.model_version.remove(role, shown)
        if version is not None:
            self.model_version.labels(role, version).set(1)
            self._model_versions[role] = version

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Drop per-partition series of partitions this process no longer owns."""
        for partition in partitions:
            try:
                self.lag.remove(str(partition))
            except KeyError:
                continue
