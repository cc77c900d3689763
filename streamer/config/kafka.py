"""``kafka``: cluster address, security, topics, consumer group and client tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

from streamer.config.base import (
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Secret,
    Section,
)


class SecurityConfig(Section, frozen=True):
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


class KafkaConfig(Section, frozen=True):
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
    # Operator feedback (false alarms, missed anomalies, mutes: streamer.feedback),
    # keyed by device id and partitioned like input_topic; its offsets are kept
    # under the group "<group_id>-feedback".
    feedback_topic: str = "feedback"
    # Alerts of the registry's candidate model scored in shadow
    # (predictor.lstm.shadow): same format as alert_topic, never paged on.
    shadow_alert_topic: str = "alerts-shadow"
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
