"""The whole configuration tree."""

from __future__ import annotations

import msgspec

from streamer.config.alertmanager import AlertmanagerConfig
from streamer.config.base import Section
from streamer.config.kafka import KafkaConfig
from streamer.config.lifecycle import RetrainConfig
from streamer.config.operations import AlertsConfig, MetricsConfig, RuntimeConfig, StateConfig
from streamer.config.operators import FeedbackConfig, RuleConfig, check_rules
from streamer.config.scoring import BatchingConfig, BuffersConfig, PredictorConfig, ReadingsConfig
from streamer.config.thresholds import ThresholdsConfig


class Config(Section, frozen=True):
    """The whole configuration tree."""

    kafka: KafkaConfig = msgspec.field(default_factory=KafkaConfig)
    readings: ReadingsConfig = msgspec.field(default_factory=ReadingsConfig)
    buffers: BuffersConfig = msgspec.field(default_factory=BuffersConfig)
    batching: BatchingConfig = msgspec.field(default_factory=BatchingConfig)
    predictor: PredictorConfig = msgspec.field(default_factory=PredictorConfig)
    thresholds: ThresholdsConfig = msgspec.field(default_factory=ThresholdsConfig)
    alerts: AlertsConfig = msgspec.field(default_factory=AlertsConfig)
    state: StateConfig = msgspec.field(default_factory=StateConfig)
    feedback: FeedbackConfig = msgspec.field(default_factory=FeedbackConfig)
    # Per-device overrides by device-id pattern (the first matching rule applies).
    rules: list[RuleConfig] = msgspec.field(default_factory=list)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    runtime: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)
    alertmanager: AlertmanagerConfig = msgspec.field(default_factory=AlertmanagerConfig)
    retrain: RetrainConfig = msgspec.field(default_factory=RetrainConfig)

    def __post_init__(self) -> None:
        if self.buffers.initial_devices > self.buffers.max_devices:
            raise ValueError("buffers.initial_devices must not exceed buffers.max_devices")
        check_rules(self.rules, list(self.readings.channels))
