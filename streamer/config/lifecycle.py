"""``retrain``: what ``streamer retrain`` reads, leaves out, trains and how it gates the result.

streamer.lifecycle.retrain applies it; the registry it writes to is
``predictor.lstm.registry``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from streamer.config.base import NonNegativeInt, PositiveFloat, PositiveInt, Section

Share = Annotated[float, msgspec.Meta(gt=0, lt=1)]


class RetrainConfig(Section, frozen=True):
    """Retraining from the input topic, the gate against ``current``, and promotion after a shadow period."""

    # The most recent records read per partition of kafka.input_topic (and, as
    # a bound, of the alert and feedback topics): memory stays bounded however
    # long the topics' retention is.
    max_readings_per_partition: PositiveInt = 200_000
    # Only readings whose event time is within this many seconds of now (null:
    # every record read).
    since_s: PositiveFloat | None = None
    # Left out before and after every alert episode and every anomaly operators
    # reported missed: the readings leading into an anomaly and its tail are
    # often abnormal before and after the detector's episode.
    episode_margin_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    # Episodes operators marked false_alarm (and nobody confirmed) stay in the
    # training data: an operator said they are normal. Off: every episode is out.
    include_false_alarms: bool = False
    # The most recent share of the time span read: never trained on, it scores
    # the new bundle and `current` with the same metric.
    holdout_fraction: Share = 0.2
    # Fewer usable readings (after exclusions) than this: exit 2, nothing trained.
    min_readings: PositiveInt = 2_000
    # The new bundle is registered as candidate only if its held-out error is
    # below current's times (1 - min_improvement).
    min_improvement: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.05
    # Network and window of the new bundle (null: the same as current's).
    units: PositiveInt | None = None
    layers: PositiveInt | None = None
    window: Annotated[int, msgspec.Meta(ge=2, le=4096)] | None = None
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 256
    learning_rate: PositiveFloat = 0.003
    # Most training sequences (a seeded random subset): bounds the time a run takes.
    max_sequences: PositiveInt | None = 60_000
    seed: NonNegativeInt = 7
    # Promotion of the candidate (`streamer retrain --promote-after-shadow`, or
    # every run with auto_promote): once it has been candidate this long...
    shadow_period_s: PositiveFloat = 86_400.0
    # ...its shadow alerts per hour exceed current's by at most this share...
    max_alert_increase: Annotated[float, msgspec.Meta(ge=0)] = 0.1
    # ...and its operator precision (feedback on the alerts its episodes
    # overlap) is not lower. Off: only the explicit flag promotes.
    auto_promote: bool = False
