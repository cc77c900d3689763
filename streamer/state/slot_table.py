"""A struct of numpy arrays with one row per device slot.

Every stateful component (ring buffers, forecaster, threshold, alert
episodes) declares its per-device fields here, so that all of them grow
together when new devices appear, and a device's whole state is one row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class _Field:
    shape: tuple[int, ...]
    dtype: np.dtype[np.generic]
    fill: float | int | bool


class SlotTable:
    """Named arrays of shape ``(capacity, *field_shape)``, grown by doubling.

    >>> table = SlotTable(capacity=2)
    >>> table.add_field("count", (), np.int64, 0)
    >>> table.grow(3)
    >>> table.capacity, table["count"].shape
    (4, (4,))
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._specs: dict[str, _Field] = {}
        self._arrays: dict[str, npt.NDArray[Any]] = {}

    def add_field(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: npt.DTypeLike,
        fill: float | int | bool,
    ) -> None:
        """Declare a per-slot field; every row starts at ``fill``."""
        if name in self._specs:
            raise ValueError(f"field {name!r} is already declared")
        spec = _Field(tuple(shape), np.dtype(dtype), fill)
        self._specs[name] = spec
        self._arrays[name] = np.full((self.capacity, *spec.shape), fill, dtype=spec.dtype)

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        # Components look arrays up per call: growth replaces them.
        return self._arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self._arrays

    @property
    def fields(self) -> tuple[str, ...]:
        """Names of the declared fields."""
        return tuple(self._specs)

    def grow(self, min_capacity: int) -> None:
        """Make room for at least ``min_capacity`` rows, doubling as needed."""
        if min_capacity <= self.capacity:
            return
        capacity = self.capacity
        while capacity < min_capacity:
            capacity *= 2
        for name, spec in self._specs.items():
            old = self._arrays[name]
            new = np.full((capacity, *spec.shape), spec.fill, dtype=spec.dtype)
            new[: self.capacity] = old
            self._arrays[name] = new
        self.capacity = capacity

    def reset_rows(self, rows: npt.NDArray[np.intp]) -> None:
        """Return ``rows`` of every field to their initial fill value."""
        for name, spec in self._specs.items():
            self._arrays[name][rows] = spec.fill

    def nbytes(self) -> int:
        """Memory held by all fields."""
        return sum(array.nbytes for array in self._arrays.values())
