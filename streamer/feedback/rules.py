"""Per-device rules from configuration (``rules``): which rule a device falls under, and what it changes.

A device falls under the first rule whose ``devices`` glob matches its id,
decided once when the device is admitted (``reg_rule`` in the slot table;
not snapshotted: a restarted daemon with other rules re-decides). A rule may
give its devices another threshold method or parameters (their rows are
judged by that method's instance), a sensitivity (a factor on the method's
bar in surprise, applied by the operator gate with feedback's bars), muted
channels (a flag whose strongest channel is muted raises no alert) and
recurring maintenance windows (UTC; flags inside raise no alert).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from streamer.config import RuleConfig, ThresholdsConfig
from streamer.config.operators import WEEKDAYS, minute_of_day
from streamer.feedback.messages import pattern_regex

IndexArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]
Int64Array = npt.NDArray[np.int64]
NO_RULE = -1  # as streamer.state.registry.NO_RULE
_DAY_MS = 86_400_000
_MINUTE_MS = 60_000
# 1970-01-01 was a Thursday: weekday index 3 with Monday = 0.
_EPOCH_WEEKDAY = 3


class RuleBook:
    """The configured rules, indexed for vectorised lookups (row ``r + 1`` is rule ``r``; row 0: no rule)."""

    def __init__(self, rules: Sequence[RuleConfig], channels: Sequence[str],
                 thresholds: ThresholdsConfig) -> None:
        self.rules = list(rules)
        self._patterns = [pattern_regex(rule.devices) for rule in self.rules]
        count = len(self.rules)
        self.sensitivity = np.ones(count + 1)
        self.muted = np.zeros((count + 1, len(channels)), dtype=bool)
        # Distinct threshold settings: 0 is the top-level section; group[r + 1] is rule r's.
        self.threshold_settings: list[ThresholdsConfig] = [thresholds]
        self.group = np.zeros(count + 1, dtype=np.intp)
        self._windows: list[list[tuple[npt.NDArray[np.bool_], int, int]]] = [[] for _ in range(count + 1)]
        for index, rule in enumerate(self.rules, start=1):
            self.sensitivity[index] = rule.sensitivity
            for channel in rule.muted_channels:
                self.muted[index, list(channels).index(channel)] = True
            settings = rule.applied_to(thresholds)
            if settings not in self.threshold_settings:
                self.threshold_settings.append(settings)
            self.group[index] = self.threshold_settings.index(settings)
            for window in rule.maintenance:
                days = np.array([day in window.days for day in WEEKDAYS])
                self._windows[index].append((days, minute_of_day(window.start), minute_of_day(window.end)))
        self.active = count > 0
        self.any_sensitivity = bool((self.sensitivity != 1.0).any())
        self.any_muted = bool(self.muted.any())
        self.any_maintenance = any(self._windows)

    def rule_of(self, device_ids: Sequence[str]) -> Int64Array:
        """The index of the first rule matching each id (``NO_RULE`` where none does)."""
        found = np.full(len(device_ids), NO_RULE, dtype=np.int64)
        for position, device_id in enumerate(device_ids):
            for index, pattern in enumerate(self._patterns):
                if pattern.fullmatch(device_id):
                    found[position] = index
                    break
        return found

    def in_maintenance(self, rule: Int64Array, ts: Int64Array) -> BoolArray:
        """Whether each reading (of a device under ``rule``, at event time ``ts``) is in maintenance."""
        inside = np.zeros(len(rule), dtype=bool)
        if not self.any_maintenance:
            return inside
        minute = (ts // _MINUTE_MS) % 1440
        day = (ts // _DAY_MS + _EPOCH_WEEKDAY) % 7
        for index, windows in enumerate(self._windows):
            if not windows:
                continue
            rows = rule + 1 == index
            if not rows.any():
                continue
            for days, start, end in windows:
                if start < end:
                    hit = days[day] & (minute >= start) & (minute < end)
                else:  # crosses midnight: the evening of a listed day, or the morning after it
                    hit = (days[day] & (minute >= start)) | (days[(day - 1) % 7] & (minute < end))
                inside |= rows & hit
        return inside
