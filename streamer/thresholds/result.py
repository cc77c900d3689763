"""What every threshold method answers for one round of readings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class ThresholdResult:
    """Decision for each reading of one round (one row per slot)."""

    score: npt.NDArray[np.float64]  # anomaly score in [0, 1], max over channels
    anomalous: npt.NDArray[np.bool_]  # the decision
    channel: npt.NDArray[np.intp]  # channel with the highest score
    smoothed: npt.NDArray[np.float64]  # smoothed residual (or the method's statistic) of that channel
    threshold: npt.NDArray[np.float64]  # the bound on that statistic on the side it was crossed
