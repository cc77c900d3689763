"""Typed configuration: one frozen tree, validated when it is loaded, one module per section group.

- ``base``: the section base, bounded number types, :class:`Secret`;
- ``kafka``: ``kafka`` (and its ``security``);
- ``scoring``: ``readings``, ``buffers``, ``batching``, ``predictor``;
- ``thresholds``: ``thresholds`` with a subsection per method (``zscore``,
  ``dynamic``, ``likelihood``) and per check (``range_novelty``,
  ``record_gate``, ``stuck``);
- ``operations``: ``alerts``, ``state``, ``metrics``, ``runtime``;
- ``operators``: ``feedback`` (operator feedback's effect on sensitivity), ``rules`` (per-device overrides);
- ``alertmanager``: ``alertmanager`` (the bridge, ``streamer alertmanager``);
- ``lifecycle``: ``retrain`` (``streamer retrain``: retraining with a gate, promotion after shadow);
- ``tree``: :class:`Config`, the whole tree;
- ``loading``: :func:`load_config` (file, environment, errors that name the
  key and the source), and showing or writing a config without leaking secrets.
"""

from streamer.config.alertmanager import AlertmanagerConfig
from streamer.config.base import (
    MASK,
    NonNegativeInt,
    Port,
    PositiveFloat,
    PositiveInt,
    Secret,
    Section,
    UnitInterval,
)
from streamer.config.kafka import KafkaConfig, SecurityConfig
from streamer.config.lifecycle import RetrainConfig
from streamer.config.loading import (
    ENV_PREFIX,
    config_document,
    env_overrides,
    load_config,
    log_effective_config,
    masked,
    write_config_file,
)
from streamer.config.operations import AlertsConfig, MetricsConfig, RuntimeConfig, StateConfig
from streamer.config.operators import FeedbackConfig, MaintenanceWindow, RuleConfig, RuleThresholds
from streamer.config.scoring import (
    BaselineConfig,
    BatchingConfig,
    BuffersConfig,
    LSTMConfig,
    PredictorConfig,
    ReadingsConfig,
)
from streamer.config.thresholds import (
    MOVED_KEYS,
    DynamicThresholdConfig,
    LikelihoodConfig,
    RangeNoveltyConfig,
    RecordGateConfig,
    StuckConfig,
    ThresholdsConfig,
    ZScoreConfig,
)
from streamer.config.tree import Config

__all__ = [
    "ENV_PREFIX",
    "MASK",
    "MOVED_KEYS",
    "AlertmanagerConfig",
    "AlertsConfig",
    "BaselineConfig",
    "BatchingConfig",
    "BuffersConfig",
    "Config",
    "DynamicThresholdConfig",
    "FeedbackConfig",
    "KafkaConfig",
    "LSTMConfig",
    "LikelihoodConfig",
    "MaintenanceWindow",
    "MetricsConfig",
    "NonNegativeInt",
    "Port",
    "PositiveFloat",
    "PositiveInt",
    "PredictorConfig",
    "RangeNoveltyConfig",
    "ReadingsConfig",
    "RecordGateConfig",
    "RetrainConfig",
    "RuleConfig",
    "RuleThresholds",
    "RuntimeConfig",
    "Secret",
    "Section",
    "SecurityConfig",
    "StateConfig",
    "StuckConfig",
    "ThresholdsConfig",
    "UnitInterval",
    "ZScoreConfig",
    "config_document",
    "env_overrides",
    "load_config",
    "log_effective_config",
    "masked",
    "write_config_file",
]
