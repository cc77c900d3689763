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

    @property
    def state_fields(self) -> tuple[str, ...]:
        """Its slot-table fields, as named in the whole table (the model part of a snapshot row)."""
        ...

    def forget(self, slots: IndexArray) -> None:
        """Return each slot's state to that of a device never seen."""
        ...

    def rebuild(self, slots: IndexArray, history: Float64Array, filled: npt.NDArray[np.int64],
                source: Predictor | None = None) -> None:
        """Rebuild the state of ``slots`` from their recent readings (see :func:`replay_history`).

        ``source``: the model running beside it, whose state of the same
        devices a predictor may carry over where it means the same thing.
        """
        ...


def replay_history(predictor: Predictor, slots: IndexArray, history: Float64Array,
                   filled: npt.NDArray[np.int64]) -> None:
    """Rebuild the state of ``slots`` from their recent readings, oldest first.

    Args:
        predictor: The predictor whose state is rebuilt (forgotten first).
        slots: Distinct slots.
        history: ``(len(slots), window, channels)``: each slot's last readings,
            right-aligned (a ring buffer's windows); entries before the last
            ``filled`` are ignored.
        filled: How many of each slot's entries hold readings.
    """
    predictor.forget(slots)
    window = history.shape[1]
    for step in range(window):
        present = np.flatnonzero(filled >= window - step)
        if present.size:
            predictor.observe(slots[present], history[present, step])
