"""Promotion after a shadow period: the candidate replaces ``current`` only if it did no worse in shadow.

The candidate has scored the same readings as ``current`` since it became
candidate (the registry's history says when); its alerts are on
``kafka.shadow_alert_topic`` and current's on ``kafka.alert_topic``. It is
promoted when, over that period:

1. it has been candidate for at least ``retrain.shadow_period_s``;
2. its alert episodes per hour exceed current's by at most
   ``retrain.max_alert_increase`` (relative). With
   ``predictor.lstm.shadow.fraction`` below 1 the candidate scores only that
   share of the devices, so its rate is divided by the fraction;
3. its operator precision is not lower: operators give feedback on current's
   alerts only, so a candidate episode takes the verdict (``confirmed`` or
   ``false_alarm``) of current's episodes of the same device that it
   overlaps. Where no feedback exists the check is skipped;
4. it also raised an episode over every episode operators confirmed (only
   when it scores every device): a candidate that alerts less by missing
   real anomalies is not better.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from streamer.lifecycle.exclusions import Episode

MS_PER_HOUR = 3_600_000


@dataclass(frozen=True)
class ShadowEvidence:
    """How current and the candidate did over the shadow period."""

    hours: float
    current_episodes: int
    candidate_episodes: int
    shadow_fraction: float
    current_precision: float | None  # None: no feedback on current's episodes
    candidate_precision: float | None  # None: no candidate episode overlaps one with feedback
    confirmed: int
    confirmed_caught: int

    @property
    def current_per_hour(self) -> float:
        """Current's alert episodes per hour."""
        return self.current_episodes / self.hours if self.hours > 0 else 0.0

    @property
    def candidate_per_hour(self) -> float:
        """The candidate's alert episodes per hour, scaled to every device."""
        return self.candidate_episodes / self.hours / self.shadow_fraction if self.hours > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """For the command's summary."""
        return {"hours": self.hours, "current_episodes": self.current_episodes,
                "candidate_episodes": self.candidate_episodes, "shadow_fraction": self.shadow_fraction,
                "current_per_hour": self.current_per_hour, "candidate_per_hour": self.candidate_per_hour,
                "current_precision": self.current_precision, "candidate_precision": self.candidate_precision,
                "confirmed": self.confirmed, "confirmed_caught": self.confirmed_caught}


def _overlaps(a: Episode, b: Episode) -> bool:
    return a.device_id == b.device_id and a.start_ms <= b.end_ms and b.start_ms <= a.end_ms


def _precision(verdicts: Sequence[str]) -> float | None:
    if not verdicts:
        return None
    return sum(v == "confirmed" for v in verdicts) / len(verdicts)


def evidence(current: Sequence[Episode], candidate: Sequence[Episode],
             verdict: Mapping[str, Literal["confirmed", "false_alarm"]], *, since_ms: int, now_ms: int,
             shadow_fraction: float = 1.0) -> ShadowEvidence:
    """Compare the episodes each model opened in ``[since_ms, now_ms]`` (callers pass each model's own).

    >>> a = Episode("a1", "d", 100, 200, "cur")
    >>> b = Episode("b1", "d", 150, 180, "cand")
    >>> e = evidence([a], [b], {"a1": "confirmed"}, since_ms=0, now_ms=3_600_000)
    >>> e.current_per_hour, e.candidate_precision, e.confirmed_caught
    (1.0, 1.0, 1)
    """
    current = [e for e in current if since_ms <= e.start_ms <= now_ms]
    candidate = [e for e in candidate if since_ms <= e.start_ms <= now_ms]
    judged = [e for e in current if e.alert_id in verdict]
    inherited = []
    for episode in candidate:
        matches = [verdict[other.alert_id] for other in judged if _overlaps(episode, other)]
        if matches:
            # One real anomaly under it makes the candidate's episode a true alert.
            inherited.append("confirmed" if "confirmed" in matches else "false_alarm")
    confirmed = [e for e in judged if verdict[e.alert_id] == "confirmed"]
    caught = sum(any(_overlaps(e, other) for other in candidate) for e in confirmed)
    return ShadowEvidence(
        hours=max(0.0, (now_ms - since_ms) / MS_PER_HOUR), current_episodes=len(current),
        candidate_episodes=len(candidate), shadow_fraction=shadow_fraction,
        current_precision=_precision([verdict[e.alert_id] for e in judged]),
        candidate_precision=_precision(inherited), confirmed=len(confirmed), confirmed_caught=caught)


@dataclass(frozen=True)
class PromotionDecision:
    """Whether to promote, and why (or why not)."""

    promote: bool
    reason: str


def decide(found: ShadowEvidence, *, max_alert_increase: float) -> PromotionDecision:
    """Checks 2-4 of the module docstring (the period itself is checked by the caller).

    >>> found = ShadowEvidence(24.0, 48, 50, 1.0, None, None, 0, 0)
    >>> decide(found, max_alert_increase=0.1).promote, decide(found, max_alert_increase=0.01).promote
    (True, False)
    """
    allowed = found.current_per_hour * (1.0 + max_alert_increase)
    if found.candidate_per_hour > allowed:
        return PromotionDecision(False, f"{found.candidate_per_hour:.3g} shadow alerts/h vs current's "
                                        f"{found.current_per_hour:.3g}: more than +{max_alert_increase:.0%}")
    if found.current_precision is not None and found.candidate_precision is not None \
            and found.candidate_precision < found.current_precision:
        return PromotionDecision(False, f"operator precision {found.candidate_precision:.2f} is below "
                                        f"current's {found.current_precision:.2f}")
    if found.shadow_fraction >= 1.0 and found.confirmed_caught < found.confirmed:
        return PromotionDecision(False, f"it missed {found.confirmed - found.confirmed_caught} of the "
                                        f"{found.confirmed} episode(s) operators confirmed")
    return PromotionDecision(True, f"{found.candidate_per_hour:.3g} shadow alerts/h vs current's "
                                   f"{found.current_per_hour:.3g} (at most +{max_alert_increase:.0%}), "
                                   "operator precision not lower, every confirmed episode caught")


def epoch_ms(at: str) -> int:
    """Epoch ms of a registry history time (``%Y-%m-%dT%H:%M:%SZ``, UTC).

    >>> epoch_ms("1970-01-01T00:01:00Z")
    60000
    """
    return calendar.timegm(time.strptime(at, "%Y-%m-%dT%H:%M:%SZ")) * 1000


def shadow_since_ms(history: Sequence[Any], candidate: str) -> int | None:
    """When ``candidate`` last became candidate (epoch ms), from the registry's history; None: never."""
    for entry in reversed(history):
        if entry.action == "shadow" and entry.version == candidate:
            return epoch_ms(entry.at)
    return None
