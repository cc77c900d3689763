"""``feedback`` and ``rules``: operator feedback's effect on sensitivity, and per-device overrides.

streamer.feedback.adjustments applies both.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

import msgspec

from streamer.config.base import PositiveFloat, PositiveInt, Section
from streamer.config.thresholds import (
    DynamicThresholdConfig,
    LikelihoodConfig,
    ThresholdsConfig,
    ZScoreConfig,
)


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


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def minute_of_day(clock: str) -> int:
    """Minutes after midnight of an ``HH:MM`` time.

    >>> minute_of_day("02:30")
    150
    """
    match = _CLOCK.fullmatch(clock)
    if match is None:
        raise ValueError(f"{clock!r} is not a time of day (HH:MM, 00:00-23:59)")
    return int(match.group(1)) * 60 + int(match.group(2))


class MaintenanceWindow(Section, frozen=True):
    """A recurring window (UTC) in which a rule's devices raise no alerts; it may cross midnight."""

    start: str  # HH:MM
    end: str  # HH:MM; before start: the window ends the next day
    days: list[Weekday] = msgspec.field(default_factory=lambda: list(WEEKDAYS))  # the days it starts on

    def __post_init__(self) -> None:
        if minute_of_day(self.start) == minute_of_day(self.end):
            raise ValueError("start and end are the same time")
        if not self.days:
            raise ValueError("days is empty")


class RuleThresholds(Section, frozen=True):
    """What a rule may change of ``thresholds``: the method and its parameters."""

    method: Literal["zscore", "dynamic", "likelihood"] | None = None
    # A subsection given here starts from the built-in defaults, not from the
    # top-level thresholds section.
    zscore: ZScoreConfig | None = None
    dynamic: DynamicThresholdConfig | None = None
    likelihood: LikelihoodConfig | None = None


class RuleConfig(Section, frozen=True):
    """Overrides for the devices whose id matches ``devices`` (the first matching rule applies)."""

    devices: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]  # a glob: pump-*, site-[ab]/*
    # Multiplies the method's bar on the surprise (score / (1 - score)): below 1
    # more sensitive, above 1 less (zscore and likelihood; dynamic has no bar).
    sensitivity: PositiveFloat = 1.0
    muted_channels: list[str] = msgspec.field(default_factory=list)  # flags on these channels raise no alert
    maintenance: list[MaintenanceWindow] = msgspec.field(default_factory=list)
    thresholds: RuleThresholds | None = None

    def applied_to(self, thresholds: ThresholdsConfig) -> ThresholdsConfig:
        """``thresholds`` with this rule's overrides."""
        override = self.thresholds
        if override is None:
            return thresholds
        changes = {name: getattr(override, name) for name in ("method", "zscore", "dynamic", "likelihood")
                   if getattr(override, name) is not None}
        return msgspec.structs.replace(thresholds, **changes)


def check_rules(rules: list[RuleConfig], channels: list[str]) -> None:
    """Checks across sections: every muted channel is a channel of ``readings.channels``."""
    for index, rule in enumerate(rules):
        for channel in rule.muted_channels:
            if channel not in channels:
                raise ValueError(f"rules[{index}].muted_channels: {channel!r} is not in readings.channels")
