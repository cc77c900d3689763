"""Typed configuration: one frozen tree, validated when it is loaded.

Precedence, lowest to highest:

1. defaults built into these classes (``config.yaml`` documents the same values);
2. the YAML file given with ``--config``;
3. environment variables ``STREAMER__<SECTION>__<KEY>=value`` (double underscore
   between levels, case-insensitive; the value is parsed as a YAML scalar, so
   ``STREAMER__BATCHING__MAX_BATCH=512`` is an int and
   ``STREAMER__READINGS__CHANNELS='[temp, vibration]'`` a list).

Secrets (``kafka.security.sasl_password``) may also come from a file
(``sasl_password_file``) and are masked whenever the config is shown.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from streamer.errors import ConfigError

log = logging.getLogger(__name__)

ENV_PREFIX = "STREAMER__"
MASK = "***"
_SECRET_KEYS = frozenset({"sasl_password"})

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
UnitInterval = Annotated[float, msgspec.Meta(gt=0, le=1)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every config section: immutable, unknown keys rejected."""


class Secret:
    """A configured secret that never prints: ``repr``, ``str`` and formatting show ``***``.

    Only :meth:`reveal` gives the value, so a config logged, printed or put in
    an exception message by mistake does not leak it.

    >>> secret = Secret("hunter2")
    >>> f"{secret} {secret!r}", secret.reveal()
    ('*** Secret(***)', 'hunter2')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SecurityConfig(_Section, frozen=True):
    """How the daemon authenticates to Kafka."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    sasl_password_file: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        if self.protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ValueError(f"sasl_mechanism is required with protocol {self.protocol}")
            if self.sasl_username is None:
                raise ValueError(f"sasl_username is required with protocol {self.protocol}")
            if self.sasl_password is None and self.sasl_password_file is None:
                raise ValueError("set sasl_password (preferably from the environment) or "
                                 "sasl_password_file")

    def password(self) -> str | None:
        """The SASL password, read from ``sasl_password_file`` when that is set."""
        if self.sasl_password_file is not None:
            return Path(self.sasl_password_file).read_text(encoding="utf-8").strip()
        return None if self.sasl_password is None else self.sasl_password.reveal()


class KafkaConfig(_Section, frozen=True):
    """Cluster address, topics, consumer group and client tuning."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "streamer"
    group_id: str = "streamer"
    # Static membership: a stable id per replica (e.g. the StatefulSet pod name)
    # lets a restarted daemon rejoin within session_timeout_ms without a rebalance.
    group_instance_id: str | None = None
    input_topic: str = "readings"
    alert_topic: str = "alerts"
    dead_letter_topic: str = "readings-dlq"
    # Compacted topic of per-device detector snapshots (see the `state` section).
    # Unset: "<group_id>-<input_topic>-state", so two groups reading one input
    # topic never restore each other's devices (Kafka Streams names its
    # changelogs after the application id for the same reason).
    state_topic: str | None = None
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    max_poll_records: PositiveInt = 5000
    fetch_max_wait_ms: NonNegativeInt = 20
    session_timeout_ms: PositiveInt = 10_000
    heartbeat_interval_ms: PositiveInt = 3_000
    max_poll_interval_ms: PositiveInt = 300_000
    request_timeout_ms: PositiveInt = 30_000
    # The idempotent producer keeps retries from duplicating alerts. Some
    # Kafka-protocol brokers (Tansu 0.6) reject the InitProducerId version
    # aiokafka sends; turn it off for those and keep acks=all.
    idempotent_producer: bool = True
    producer_linger_ms: NonNegativeInt = 0
    # Brokers unanswered for this long fail /healthz and stop the daemon with
    # a non-zero exit, so the orchestrator restarts it instead of it idling
    # as a zombie that holds no partitions and makes no progress.
    unreachable_timeout_s: PositiveFloat = 60.0
    create_topics: bool = True
    topic_partitions: PositiveInt = 6
    replication_factor: PositiveInt = 1
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)

    def __post_init__(self) -> None:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        if not self.bootstrap_servers.strip():
            raise ValueError("bootstrap_servers must not be empty")
        if self.state_topic is not None and not self.state_topic.strip():
            raise ValueError("state_topic must not be empty (leave it unset for the default name)")

    def state_topic_name(self) -> str:
        """The state topic: ``state_topic``, or one named after the group and the input topic.

        >>> KafkaConfig(group_id="g", input_topic="readings").state_topic_name()
        'g-readings-state'
        """
        return self.state_topic or f"{self.group_id}-{self.input_topic}-state"


class ReadingsConfig(_Section, frozen=True):
    """What a valid reading looks like."""

    # Channel names, in model input order. A reading with a scalar `value`
    # fills the single channel of a one-channel deployment.
    channels: list[str] = msgspec.field(default_factory=lambda: ["value"])
    # Devices whose id does not match are rejected as `unknown_device`.
    device_id_pattern: str = r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}"
    max_message_bytes: PositiveInt = 65_536
    # Event timestamps further ahead of the wall clock than this are rejected.
    max_future_ms: PositiveInt = 86_400_000

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("channels must name at least one channel")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels must be unique")
        try:
            re.compile(self.device_id_pattern)
        except re.error as exc:
            raise ValueError(f"device_id_pattern is not a valid regex: {exc}") from exc


class BuffersConfig(_Section, frozen=True):
    """Per-device ring buffers held in one preallocated table."""

    window: Annotated[int, msgspec.Meta(ge=2, le=4096)] = 64
    initial_devices: PositiveInt = 1024
    # New devices beyond this many are rejected as `device_limit`, which
    # bounds memory under a flood of new ids.
    max_devices: PositiveInt = 1_000_000


class BatchingConfig(_Section, frozen=True):
    """Micro-batching between fetch and scoring."""

    max_batch: PositiveInt = 4096
    # Once a fetch is in hand, wait this long for more before scoring. Under
    # load the queue fills while a batch is scored, so batches grow without
    # waiting; a long wait only adds latency (10 ms: p99 43 ms at 10K/s, 2 ms:
    # 33 ms, same drain rate; benchmarks/performance.md).
    max_wait_ms: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    # Fetched batches waiting to be scored; the fetch loop waits when it is full.
    queue_size: PositiveInt = 16
    # Backpressure in queued readings: every assigned partition is paused once
    # this many readings wait to be scored, and resumed at pause_low or fewer.
    # Unset: half the queue's capacity (queue_size * max_batch / 2) and half
    # of pause_high. Pausing (rather than blocking on a full queue) keeps the
    # consumer polling, so a slow scorer never exceeds max_poll_interval_ms.
    pause_high: PositiveInt | None = None
    pause_low: NonNegativeInt | None = None
    # Scored batches whose alerts and dead letters may await the broker's
    # acknowledgement while later batches are scored. Their offsets are marked
    # done in fetch order, each only once it and every earlier batch are
    # acknowledged, so commits never run ahead of delivery. 1: wait for a
    # batch's acknowledgements before scoring the next.
    max_unacked_batches: PositiveInt = 4

    def __post_init__(self) -> None:
        high, low = self.pause_marks()
        capacity = self.queue_size * self.max_batch
        if high > capacity:
            raise ValueError(f"pause_high must be at most queue_size * max_batch ({capacity}), got {high}")
        if low >= high:
            raise ValueError(f"pause_low must be below pause_high ({high}), got {low}")

    def pause_marks(self) -> tuple[int, int]:
        """The effective (high, low) backpressure marks in readings.

        >>> BatchingConfig(max_batch=100, queue_size=8).pause_marks()
        (400, 200)
        >>> BatchingConfig(max_batch=100, queue_size=8, pause_high=300).pause_marks()
        (300, 150)
        """
        half_queue = max(1, self.queue_size * self.max_batch // 2)
        high = self.pause_high if self.pause_high is not None else half_queue
        low = self.pause_low if self.pause_low is not None else high // 2
        return high, low


class BaselineConfig(_Section, frozen=True):
    """Damped-trend Holt forecaster (exponential smoothing of level and trend)."""

    alpha: UnitInterval = 0.5
    beta: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    phi: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.9


class LSTMConfig(_Section, frozen=True):
    """The trained LSTM forecaster."""

    # A bundle directory, or "default" for the bundle shipped with the package.
    bundle: str = "default"
    # stateful: O(1) per reading (two staggered LSTM states per device);
    # window: the model over each device's last `window` readings.
    mode: Literal["stateful", "window"] = "stateful"
    # numpy needs no TensorFlow; tensorflow compiles with tf.function; keras
    # uses keras.ops under whichever Keras backend is configured (JAX/torch on GPUs).
    backend: Literal["numpy", "tensorflow", "keras"] = "numpy"


class PredictorConfig(_Section, frozen=True):
    """Which forecaster scores readings."""

    kind: Literal["baseline", "lstm"] = "lstm"
    baseline: BaselineConfig = msgspec.field(default_factory=BaselineConfig)
    lstm: LSTMConfig = msgspec.field(default_factory=LSTMConfig)


class DynamicThresholdConfig(_Section, frozen=True):
    """Nonparametric dynamic threshold (Hundman et al., KDD 2018), made streaming.

    Defaults are the published ones.
    """

    # Trailing smoothed errors the threshold is chosen over (h).
    window: Annotated[int, msgspec.Meta(ge=10)] = 2100
    # EWMA span of the absolute residual.
    smoothing_span: Annotated[float, msgspec.Meta(ge=1)] = 105.0
    # Candidate thresholds mean + z * std for z in [z_min, z_max] by z_step.
    z_min: PositiveFloat = 2.5
    z_max: PositiveFloat = 11.5
    z_step: PositiveFloat = 0.5
    # A candidate flagging more sequences than this is rejected.
    max_sequences: PositiveInt = 5
    # A candidate flagging this fraction of the window or more is rejected.
    max_fraction: UnitInterval = 0.5
    # Prune a flagged sequence whose peak is within this fraction of the next lower peak.
    prune_p: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.13
    # Readings either side of a flagged point that join it into one sequence.
    error_buffer: NonNegativeInt = 100
    # Re-evaluate the threshold every this many readings of a device (1 = every reading).
    decision_interval: PositiveInt = 70
    # Smoothed errors a device needs before the first evaluation.
    min_history: Annotated[int, msgspec.Meta(ge=2)] = 100
    # Also search the inverted errors (2*mean - e), catching drops.
    inverted: bool = True

    def __post_init__(self) -> None:
        if self.z_max < self.z_min:
            raise ValueError("z_max must be >= z_min")
        if self.min_history > self.window:
            raise ValueError("min_history must be <= window")


class LikelihoodConfig(_Section, frozen=True):
    """Anomaly likelihood: Gaussian tail of a short average of the raw score against its history."""

    # Readings in the short moving average of the raw score.
    short_window: PositiveInt = 10
    # Raw scores kept for the long-run mean and variance.
    history: Annotated[int, msgspec.Meta(ge=10)] = 8640
    # How the long-run mean and variance of the short averages are kept.
    # window: exact, over a ring of the last `history` averages (2 bytes each:
    # ~17 KB per device at 8640). exponential: exponentially weighted with
    # span `history`, 16 bytes per device; recent averages weigh more and an
    # old outlier fades instead of dropping out at once.
    estimator: Literal["window", "exponential"] = "exponential"
    # Readings before the first estimate (the likelihood is 0.5 until then).
    learning_period: PositiveInt = 288
    # Re-estimate the mean and variance every this many readings.
    reestimation_period: PositiveInt = 100
    # Likelihood at or above this flags a reading.
    threshold: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.9999
    # Floor of the long-run standard deviation of the averaged raw score.
    min_std: PositiveFloat = 1e-4
    # Readings after a reported red during which a further red is reported at
    # the yellow level (still flagged); 0: only an episode's continuation is.
    quiet_period: NonNegativeInt = 0
    # Where the raw score comes from. residual: the forecast residual,
    # erf(|z|/sqrt(2)). pattern: model-free pattern novelty, 1.0 when the last
    # `pattern_order` readings, quantised to `pattern_buckets` levels of the
    # range of the device's first `pattern_learning` readings, form a pattern
    # the device never showed (streamer.thresholds.pattern; ~+6 on NAB with
    # range novelty, see README, Evaluation).
    source: Literal["residual", "pattern"] = "residual"
    pattern_buckets: Annotated[int, msgspec.Meta(ge=1, le=62)] = 6
    pattern_order: Annotated[int, msgspec.Meta(ge=1, le=4)] = 2
    pattern_learning: Annotated[int, msgspec.Meta(ge=4)] = 288
    # pattern: add the level of a moving average of the readings (span
    # pattern_context_span readings, `pattern_context_buckets` levels of the
    # same range, +2 beyond it) to each pattern, so that a pair of levels is
    # also judged by where the signal has been lately. null: off.
    pattern_context_span: Annotated[int, msgspec.Meta(ge=1)] | None = None
    pattern_context_buckets: Annotated[int, msgspec.Meta(ge=1, le=62)] = 2


class StuckConfig(_Section, frozen=True):
    """Stuck sensors: a channel that repeats one value for far longer than its device ever has.

    A forecast residual cannot see them (a stuck sensor is easy to forecast);
    see :mod:`streamer.thresholds.stuck`. Defaults measured on the simulated
    fleet, MSL, NAB and SKAB (README, Thresholds and alerts).
    """

    # Off: no per-device state, nothing flagged.
    enabled: bool = True
    # A run of identical readings this long or shorter is never stuck. The
    # NAB Twitter series share a 26-reading outage at zero that is not labelled.
    min_run: Annotated[int, msgspec.Meta(ge=1)] = 30
    # ... nor one up to this multiple of the longest run the device has shown
    # while not flagged, so channels that are naturally flat for long stretches
    # stay quiet (normal runs on MSL, NAB and SKAB reach 4.8x the longest
    # before them; the labelled stuck ones 276x and more).
    factor: Annotated[float, msgspec.Meta(ge=1)] = 10.0
    # A reading within this share of the device's observed range (max - min)
    # of the run's first reading extends the run (variance collapse); 0: exact
    # repeats only.
    tolerance: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.0
    # Readings a device must have shown before a run began for the run to be
    # judged: a run from a device's first readings has no history to judge it by.
    min_readings: NonNegativeInt = 80


class RecordGateConfig(_Section, frozen=True):
    """zscore's flags stand only where the residual beats the device's recent largest.

    See :mod:`streamer.thresholds.record`; measured on MSL, NAB, SKAB and the
    simulated fleet (README, Thresholds and alerts).
    """

    # Off: every flag of the method stands, no per-device state.
    enabled: bool = True
    # Readings the record covers: an extreme is forgotten after half of this
    # to this many readings (the range novelty horizon).
    horizon: Annotated[int, msgspec.Meta(ge=2)] | None = 8640
    # A residual must beat the record by this share of it (0: any larger residual).
    margin: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    # Scored residuals the record must have learned before any flag stands: as
    # many as the warm-up (a device's 80th reading with the defaults). On the
    # simulated fleet 20-40 catch the same anomalies with 2 false alerts over
    # 8 seeds, 60 misses 12 more, 0 raises 4 (README, Thresholds and alerts).
    min_readings: NonNegativeInt = 40


class ThresholdsConfig(_Section, frozen=True):
    """Dynamic per-device threshold on the forecast residual."""

    # zscore: rolling z-score of the smoothed residual; dynamic: Hundman et al.'s
    # nonparametric threshold; likelihood: anomaly likelihood of the residual.
    method: Literal["zscore", "dynamic", "likelihood"] = "zscore"
    # zscore: EWMA span of the residual smoothing (1 = no smoothing).
    smoothing_span: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    # zscore: span of the exponentially weighted mean and variance of the smoothed residual.
    window: Annotated[int, msgspec.Meta(ge=16)] = 200
    # zscore: |z| at or above this flags a reading.
    z: PositiveFloat = 5.0
    # Readings a device must have before it is scored.
    warmup: NonNegativeInt = 40
    # zscore: standard deviation floor, so a perfectly flat signal does not alert on jitter.
    min_std: Annotated[float, msgspec.Meta(ge=0)] = 1e-6
    # zscore: a second floor on the residual's standard deviation, as a share of
    # the device's observed range (max - min): a signal that is flat for a while
    # must not turn its next small step into an enormous z.
    min_std_fraction: Annotated[float, msgspec.Meta(ge=0)] = 0.01
    # Range novelty, for every method: a reading beyond the device's recent
    # [min, max] by more than this share of max - min scores 1.0 and is flagged,
    # whatever its residual (catches jumps to never-seen levels that a one-step
    # forecaster absorbs after one reading). null turns it off: on the simulated
    # fleet (slow drifts and cycles longer than a young range) it raises false
    # alerts; on NAB, 0.02 is worth ~35 points (see README, Evaluation).
    range_margin: Annotated[float, msgspec.Meta(ge=0)] | None = None
    # Readings the range covers: an extreme is forgotten after between half of
    # this and this many readings (8640 = 30 days at 5 minutes). null: all-time.
    range_horizon: Annotated[int, msgspec.Meta(ge=2)] | None = 8640
    # Readings a device must have shown before a reading can be novel.
    range_min_readings: NonNegativeInt = 100
    # Readings after a novel reading scored 1.0 during which a further novel
    # reading keeps the method's score (still flagged); 0: every one scores 1.0.
    range_quiet_period: NonNegativeInt = 0
    # The method's flags stand only at residual records (streamer.thresholds.record).
    record_gate: RecordGateConfig = msgspec.field(default_factory=RecordGateConfig)
    # Stuck sensors, for every method (streamer.thresholds.stuck).
    stuck: StuckConfig = msgspec.field(default_factory=StuckConfig)
    dynamic: DynamicThresholdConfig = msgspec.field(default_factory=DynamicThresholdConfig)
    likelihood: LikelihoodConfig = msgspec.field(default_factory=LikelihoodConfig)


class AlertsConfig(_Section, frozen=True):
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


class StateConfig(_Section, frozen=True):
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


class MetricsConfig(_Section, frozen=True):
    """Prometheus endpoint and health probes."""

    enabled: bool = True
    host: str = "0.0.0.0"  # noqa: S104  # scraped from outside the pod/host by design
    port: Port = 9108
    # Period of the gauges that scan state or ask the consumer (devices, lag).
    refresh_interval_s: PositiveFloat = 2.0


class RuntimeConfig(_Section, frozen=True):
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


class Config(_Section, frozen=True):
    """The whole configuration tree."""

    kafka: KafkaConfig = msgspec.field(default_factory=KafkaConfig)
    readings: ReadingsConfig = msgspec.field(default_factory=ReadingsConfig)
    buffers: BuffersConfig = msgspec.field(default_factory=BuffersConfig)
    batching: BatchingConfig = msgspec.field(default_factory=BatchingConfig)
    predictor: PredictorConfig = msgspec.field(default_factory=PredictorConfig)
    thresholds: ThresholdsConfig = msgspec.field(default_factory=ThresholdsConfig)
    alerts: AlertsConfig = msgspec.field(default_factory=AlertsConfig)
    state: StateConfig = msgspec.field(default_factory=StateConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    runtime: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        if self.buffers.initial_devices > self.buffers.max_devices:
            raise ValueError("buffers.initial_devices must not exceed buffers.max_devices")


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load, merge and validate the configuration.

    Args:
        path: YAML file; ``None`` uses the built-in defaults only.
        environ: Environment to read ``STREAMER__*`` overrides from
            (``os.environ`` when ``None``).

    Returns:
        The validated, frozen configuration.

    Raises:
        ConfigError: The file cannot be read or a value is invalid; the message
            names the source and the key path.
    """
    source = str(path) if path is not None else "<defaults>"
    from_file: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    overrides = env_overrides(os.environ if environ is None else environ)
    raw = copy.deepcopy(from_file)
    for override_path, value in overrides.items():
        _set_path(raw, override_path, value, source="environment")
    try:
        return _convert(raw)
    except msgspec.ValidationError as exc:
        key_path, reason = _split_validation_error(str(exc))
        got = _lookup(raw, key_path)
        if got is not _MISSING and not isinstance(got, dict) and repr(got) not in reason:
            reason = f"{reason}, got {got!r}"
        raise ConfigError(_blame(from_file, overrides, source), key_path, reason) from None


def _convert(raw: dict[str, Any]) -> Config:
    # Lax mode: PyYAML (YAML 1.1) reads "1e-6" as a string; accept numeric
    # and boolean strings where numbers and booleans are expected.
    return msgspec.convert(raw, Config, strict=False, dec_hook=_decode_secret)


def _decode_secret(kind: type, value: Any) -> Any:
    if kind is Secret and isinstance(value, str):
        return Secret(value)
    raise NotImplementedError(f"{kind.__name__} from {type(value).__name__}")


def config_document(config: Config, *, reveal_secrets: bool = False) -> dict[str, Any]:
    """The config as plain data: secrets as ``***``, or as themselves for a child process's config file."""

    def encode(value: Any) -> Any:
        if isinstance(value, Secret):
            return value.reveal() if reveal_secrets else MASK
        raise NotImplementedError(f"cannot encode {type(value).__name__}")

    document: dict[str, Any] = msgspec.to_builtins(config, enc_hook=encode)
    return document


def write_config_file(config: Config, path: Path) -> Path:
    """Write ``config`` as a file another ``streamer`` process can load (JSON is valid YAML).

    The file holds the secrets themselves (a child process needs them), so
    only its owner may read it.
    """
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(msgspec.json.encode(config_document(config, reveal_secrets=True)))
    return path


def _blame(from_file: dict[str, Any], overrides: Mapping[tuple[str, ...], Any], source: str) -> str:
    """The environment when the file alone is valid, else the file."""
    if not overrides:
        return source
    try:
        _convert(copy.deepcopy(from_file))
    except msgspec.ValidationError:
        return source
    return "environment"


def env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, ...], Any]:
    """Collect ``STREAMER__A__B=value`` variables as ``{("a", "b"): value}``.

    >>> env_overrides({"STREAMER__BATCHING__MAX_BATCH": "512", "HOME": "/root"})
    {('batching', 'max_batch'): 512}
    """
    overrides: dict[tuple[str, ...], Any] = {}
    for name, text in environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        key_path = tuple(part.lower() for part in name[len(ENV_PREFIX):].split("__") if part)
        if not key_path:
            continue
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        # Secrets stay strings even when they look like numbers.
        if key_path[-1] in _SECRET_KEYS:
            value = text
        overrides[key_path] = value
    return overrides


def masked(config: Config) -> dict[str, Any]:
    """The config as plain data with every secret replaced by ``***``."""
    return config_document(config)


def log_effective_config(config: Config) -> None:
    """Log the effective configuration once, secrets masked."""
    log.info("effective configuration: %s", msgspec.json.encode(masked(config)).decode())


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", f"not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", f"must be a mapping at the top level, got {type(data).__name__}")
    return data


def _set_path(raw: dict[str, Any], key_path: tuple[str, ...], value: Any, *, source: str) -> None:
    node = raw
    for depth, key in enumerate(key_path[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(source, ".".join(key_path[: depth + 1]), "is not a section")
        node = child
    node[key_path[-1]] = value


_ERROR_PATH = re.compile(r"^(?P<reason>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_MISSING = object()


_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")


def _split_validation_error(message: str) -> tuple[str, str]:
    match = _ERROR_PATH.match(message)
    if match is None:
        path, reason = "", message
    else:
        path = re.sub(r"\[(\d+)\]", r".\1", match["path"].lstrip("."))
        reason = match["reason"]
    unknown = _UNKNOWN_FIELD.match(reason)
    if unknown is not None:  # point at the key itself, not its section
        path = f"{path}.{unknown['name']}" if path else unknown["name"]
        reason = "unknown key"
    return path, reason


def _lookup(raw: dict[str, Any], key_path: str) -> Any:
    node: Any = raw
    for key in key_path.split(".") if key_path else []:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return _MISSING
    return node
