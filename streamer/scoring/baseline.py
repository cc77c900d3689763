"""Damped-trend Holt forecaster: the ``baseline`` predictor.

Exponential smoothing of a level and a damped trend per device and channel
(Gardner & McKenzie's damped trend). It needs no training, adapts to level
shifts within a few readings, and costs a few array operations per batch,
so it is a sound default for fleets without a trained model.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from streamer.config import BaselineConfig
from streamer.scoring.predictor import Float64Array, IndexArray, Predictor, replay_history
from streamer.state.slot_table import SlotTable


class HoltPredictor:
    """Forecast ``level + phi * trend``; update level and trend on each reading."""

    name = "baseline-holt"

    def __init__(self, table: SlotTable, channels: int, config: BaselineConfig) -> None:
        self.table = table
        self.alpha = config.alpha
        self.beta = config.beta
        self.phi = config.phi
        table.add_field("holt_level", (channels,), np.float64, np.nan)
        table.add_field("holt_trend", (channels,), np.float64, 0.0)
        params = f"holt:{self.alpha}:{self.beta}:{self.phi}".encode()
        self._version = "baseline-" + hashlib.sha256(params).hexdigest()[:12]

    @property
    def version(self) -> str:
        """Derived from the smoothing parameters, so alerts name what produced them."""
        return self._version

    def forecast(self, slots: IndexArray) -> Float64Array:
        """One step ahead; NaN for slots that have seen no reading."""
        level: Float64Array = self.table["holt_level"][slots]
        trend: Float64Array = self.table["holt_trend"][slots]
        return level + self.phi * trend

    def extra_rows(self) -> None:
        """None: level and trend live in the slot table."""
        return None

    @property
    def state_fields(self) -> tuple[str, ...]:
        """Level and trend."""
        prefix = self.table.prefix
        return (f"{prefix}holt_level", f"{prefix}holt_trend")

    def forget(self, slots: IndexArray) -> None:
        """Back to no level and no trend."""
        self.table.reset_fields(slots, ["holt_level", "holt_trend"])

    def rebuild(self, slots: IndexArray, history: Float64Array, filled: npt.NDArray[np.int64],
                source: Predictor | None = None) -> None:
        """Smooth the history again from no level."""
        replay_history(self, slots, history, filled)

    def observe(self, slots: IndexArray, values: Float64Array) -> None:
        """Smooth the new readings into level and trend."""
        level = self.table["holt_level"]
        trend = self.table["holt_trend"]
        prev_level = level[slots]
        prev_trend = trend[slots]
        fresh = np.isnan(prev_level)
        damped = self.phi * prev_trend
        new_level = self.alpha * values + (1.0 - self.alpha) * (prev_level + damped)
        new_trend = self.beta * (new_level - prev_level) + (1.0 - self.beta) * damped
        level[slots] = np.where(fresh, values, new_level)
        trend[slots] = np.where(fresh, 0.0, new_trend)
