"""The predictor seam: forecasts for a batch of devices in one call."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamer.state.extra_rows import ExtraRows

IndexArray = npt.NDArray[np.intp]
Float64Array = npt.NDArray[np.float64]


class Predictor(Protocol):
    """Forecasts the next reading of many devices at once.

    ``slots`` in one call are distinct. ``forecast`` must not change state;
    ``observe`` advances each slot's state by the observed reading. Per-device
    state lives in the registry's slot table so it grows and moves with it.
    """

    @property
    def name(self) -> str:
        """Short method name reported in alerts, e.g. ``baseline-holt``."""
        ...

    @property
    def version(self) -> str:
        """Content-derived model version; part of every alert id."""
        ...

    def forecast(self, slots: IndexArray) -> Float64Array:
        """Forecast ``(len(slots), channels)``; NaN where a slot has no history yet."""
        ...

    def observe(self, slots: IndexArray, values: Float64Array) -> None:
        """Advance the state of each slot by its new reading ``(len(slots), channels)``."""
        ...

    def extra_rows(self) -> ExtraRows | None:
        """Per-slot state kept outside the slot table, for snapshots (None: all of it is in the table)."""
        ...
