"""Per-device dynamic thresholds on forecast residuals.

Every method has the same shape: per-device state in the device
:class:`~streamer.state.slot_table.SlotTable`, and one vectorised ``update``
per round of distinct devices that turns residuals into a score in [0, 1]
and a decision (:class:`~streamer.thresholds.zscore.ThresholdResult`).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamer.config import ThresholdsConfig
from streamer.state.slot_table import SlotTable
from streamer.thresholds.result import ThresholdResult


class Threshold(Protocol):
    """A per-device threshold method."""

    method: str

    def update(
        self,
        slots: npt.NDArray[np.intp],
        residual: npt.NDArray[np.float64],
        scored: npt.NDArray[np.bool_],
        values: npt.NDArray[np.float64] | None = None,
    ) -> ThresholdResult:
        """Score one residual row per distinct slot; learn only from unflagged rows.

        ``values`` are the readings themselves, for methods that judge them too.
        """
        ...


def make_threshold(table: SlotTable, channels: int, config: ThresholdsConfig) -> Threshold:
    """The method ``config.method`` names, with its state in ``table``."""
    if config.method == "dynamic":
        from streamer.thresholds.dynamic import DynamicThreshold

        return DynamicThreshold(table, channels, config)
    if config.method == "likelihood":
        from streamer.thresholds.likelihood import AnomalyLikelihood

        return AnomalyLikelihood(table, channels, config)
    from streamer.thresholds.zscore import RollingZScore

    return RollingZScore(table, channels, config.zscore)
