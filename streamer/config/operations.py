"""``alerts``, ``state``, ``metrics``, ``runtime``: episodes, state handover, metrics and the process."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from streamer.config.base import NonNegativeInt, Port, PositiveFloat, PositiveInt, Section
from streamer.config.scoring import PredictorConfig


class AlertsConfig(Section, frozen=True):
    """When alert episodes open, update and resolve."""

    # Consecutive flagged readings before an episode opens (its start is the first of them).
    min_duration: PositiveInt = 1
    # Hysteresis: once open, a reading whose score is at or above this keeps the
    # episode open even if the threshold no longer flags it (1.0 = no hysteresis).
    hold_score: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0
    # Consecutive calm readings that close an open episode. 100 (the error
    # buffer of Hundman et al.) keeps one incident one episode: at 20, bursts of
    # flags on spacecraft telemetry split into many episodes, each a false
    # positive beside the labelled one (README, Evaluation: resolve_after).
    resolve_after: PositiveInt = 100
    # Readings after a resolve during which a device cannot open a new episode.
    cooldown: NonNegativeInt = 0
    # While open, at most one `update` event per this many readings, sent only
    # when the score exceeds the highest one already reported (0 = no updates).
    update_every: NonNegativeInt = 0


class StateConfig(Section, frozen=True):
    """Per-device detector state that moves with its partition (snapshots and restore)."""

    # Snapshot devices to kafka.state_topic and restore them on assignment.
    # Off: a device that changes owner starts warming up again.
    enabled: bool = True
    # How often changed devices are snapshotted (also on revoke and shutdown).
    # Longer means fewer writes and a longer replay after a crash.
    snapshot_interval_s: PositiveFloat = 30.0
    # Input records replayed per partition on assignment to bring snapshots up
    # to the committed offset; older history is skipped (devices continue
    # from their snapshot across the gap).
    max_replay_records: NonNegativeInt = 1_000_000
    # Reading the state topic and replaying, per assignment. Partitions not
    # restored by then start cold (their devices warm up again).
    restore_timeout_s: PositiveFloat = 300.0
    # Devices per slice of a snapshot, restore or release. Each slice holds
    # the scorer while batches wait, so this bounds the scoring pause (about
    # 3-9 us per device to snapshot; benchmarks/performance.md), and a round
    # of a million changed devices is a thousand slices between batches.
    slice_devices: PositiveInt = 1_000


class MetricsConfig(Section, frozen=True):
    """Prometheus endpoint and health probes."""

    enabled: bool = True
    host: str = "0.0.0.0"  # noqa: S104  # scraped from outside the pod/host by design
    port: Port = 9108
    # Period of the gauges that scan state or ask the consumer (devices, lag).
    refresh_interval_s: PositiveFloat = 2.0


class RuntimeConfig(Section, frozen=True):
    """Process lifecycle."""

    shutdown_timeout_s: PositiveFloat = 15.0
    # Records waiting while the committed offsets have not advanced for this
    # long (a wedged scorer, commits that keep failing) fail /healthz and stop
    # the daemon with a non-zero exit, so its partitions go to a live member.
    commit_stall_timeout_s: PositiveFloat = 300.0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # text: one human-readable line per record; json: one JSON object per
    # line (ts, level, logger, message, and `event` on records other
    # programs act on: streamer.logs) for Loki, Elasticsearch and the like.
    log_format: Literal["text", "json"] = "text"
    # Where batches are scored. event_loop: on the thread that fetches and
    # decodes, between fetches (one core's worth of Python, no GIL hand-offs
    # between two busy threads: ~15 % more readings/s on CPU). thread: on a
    # scoring thread, so fetching and decoding overlap a model call that
    # releases the GIL (TensorFlow, Keras on a GPU). auto: thread for the
    # tensorflow and keras LSTM backends, event_loop otherwise. Snapshots,
    # restores and releases run on the scoring thread in every case.
    scoring: Literal["auto", "event_loop", "thread"] = "auto"
    # `streamer run` freezes its start-up objects out of the cyclic garbage
    # collector and runs a young-generation collection every this many net
    # allocations instead of Python's 700 (streamer.gc_tuning: ~+25 % drain
    # rate). null keeps Python's thresholds.
    gc_gen0_threshold: Annotated[int, msgspec.Meta(ge=100)] | None = 50_000

    def scores_on_thread(self, predictor: PredictorConfig) -> bool:
        """Whether batches are scored on a dedicated thread (see ``scoring``)."""
        if self.scoring != "auto":
            return self.scoring == "thread"
        return predictor.kind == "lstm" and predictor.lstm.backend in ("tensorflow", "keras")
