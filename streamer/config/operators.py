"""``feedback``: how operator feedback changes a device's sensitivity (streamer.feedback.adjustments)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from streamer.config.base import PositiveInt, Section


class FeedbackConfig(Section, frozen=True):
    """Operator feedback from ``kafka.feedback_topic``, applied to the device's own state."""

    # Consume kafka.feedback_topic (off: feedback waits on the topic, unread).
    enabled: bool = True
    # A false alarm raises the bar of the channel that raised it to the
    # episode's peak surprise times (1 + margin): flags of that size no longer
    # stand, larger ones do.
    margin: Annotated[float, msgspec.Meta(ge=0)] = 0.25
    # The bar never rises above this multiple of the method's own (a large
    # enough anomaly always alerts).
    max_factor: Annotated[float, msgspec.Meta(ge=1)] = 4.0
    # A missed anomaly lowers the bar by this share of the method's own...
    missed_step: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.25
    # ...down to this multiple of it.
    min_factor: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    # Adjustments decay back to the method's own bar with this half-life, in
    # readings of the device.
    half_life_readings: PositiveInt = 5_000
