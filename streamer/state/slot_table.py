"""A struct of numpy arrays with one row per device slot.

Every stateful component (ring buffers, forecaster, threshold, alert
episodes) declares its per-device fields here, so that all of them grow
together when new devices appear, and a device's whole state is one row.

Growth must not stall scoring at fleet scale: doubling a million-row table
copies it (0.8 s and 1.6 s for the last two doublings to 1M devices,
benchmarks/performance.md). So a table with a ``reserve`` allocates every
field for ``reserve`` rows up front, without touching the memory (the
kernel maps a page when it is first written), and grows by initialising the
next :data:`GROWTH_ROWS` rows in place: a bounded step, and nothing is
copied. Without a reserve, or past it, the table doubles as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

# Rows initialised per growth step of a reserved table. The cost is the first
# touch of fresh pages (steps of 16,384 rows took 15-30 ms on the 2-core VM, of 4,096 about 1 ms); a step as
# large as one full micro-batch of new devices keeps it to a few milliseconds.
GROWTH_ROWS = 4_096


@dataclass(frozen=True)
class _Field:
    shape: tuple[int, ...]
    dtype: np.dtype[np.generic]
    fill: float | int | bool

    def same_as(self, other: _Field) -> bool:
        """Same shape, type and fill (NaN fills alike)."""
        fills_match = self.fill == other.fill or (self.fill != self.fill and other.fill != other.fill)
        return self.shape == other.shape and self.dtype == other.dtype and fills_match


class SlotTable:
    """Named arrays of shape ``(capacity, *field_shape)``: grown in place up to ``reserve``, then by doubling.

    >>> table = SlotTable(capacity=2)
    >>> table.add_field("count", (), np.int64, 0)
    >>> table.grow(3)
    >>> table.capacity, table["count"].shape
    (4, (4,))
    >>> reserved = SlotTable(capacity=2, reserve=100)
    >>> reserved.add_field("count", (), np.int64, 7)
    >>> reserved.grow(3)
    >>> reserved.capacity, int(reserved["count"][-1])
    (100, 7)
    """

    def __init__(self, capacity: int, reserve: int | None = None) -> None:
        """``reserve``: rows to set aside up front (untouched memory) so growth up to it copies nothing."""
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.reserve = max(capacity, reserve or capacity)
        self._specs: dict[str, _Field] = {}
        self._blocks: dict[str, npt.NDArray[Any]] = {}  # `reserve` rows, the first `capacity` initialised
        self._arrays: dict[str, npt.NDArray[Any]] = {}  # views of the first `capacity` rows

    def add_field(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: npt.DTypeLike,
        fill: float | int | bool,
    ) -> None:
        """Declare a per-slot field; every row starts at ``fill``.

        Declaring a field again with the same shape, type and fill shares it
        (two instances of one threshold method, for devices of different rules).
        """
        spec = _Field(tuple(shape), np.dtype(dtype), fill)
        if name in self._specs:
            if self._specs[name].same_as(spec):
                return
            raise ValueError(f"field {name!r} is already declared with another shape, type or fill")
        self._specs[name] = spec
        try:
            block = np.empty((self.reserve, *spec.shape), dtype=spec.dtype)
        except MemoryError:
            log.warning("cannot set aside %d rows for %s; the table will double as it grows",
                        self.reserve, name)
            self._release_reserve()
            block = np.empty((self.capacity, *spec.shape), dtype=spec.dtype)
        block[: self.capacity] = fill
        self._blocks[name] = block
        self._arrays[name] = block[: self.capacity]

    def _release_reserve(self) -> None:
        """Give up the reserve: every field keeps exactly ``capacity`` rows (copies)."""
        self.reserve = self.capacity
        for name, block in self._blocks.items():
            self._blocks[name] = block[: self.capacity].copy()
            self._arrays[name] = self._blocks[name]

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
        """Make room for at least ``min_capacity`` rows: a step into the reserve, or doubling past it."""
        if min_capacity <= self.capacity:
            return
        old = self.capacity
        if min_capacity <= self.reserve:
            capacity = min(self.reserve, max(min_capacity, old + GROWTH_ROWS))
            for name, spec in self._specs.items():
                block = self._blocks[name]
                block[old:capacity] = spec.fill
                self._arrays[name] = block[:capacity]
        else:
            capacity = max(old, 1)
            while capacity < min_capacity:
                capacity *= 2
            for name, spec in self._specs.items():
                new = np.empty((capacity, *spec.shape), dtype=spec.dtype)
                new[:old] = self._arrays[name]
                new[old:] = spec.fill
                self._blocks[name] = self._arrays[name] = new
            self.reserve = capacity
        self.capacity = capacity

    def reset_rows(self, rows: npt.NDArray[np.intp]) -> None:
        """Return ``rows`` of every field to their initial fill value."""
        for name, spec in self._specs.items():
            self._arrays[name][rows] = spec.fill

    def reset_fields(self, rows: npt.NDArray[np.intp], names: Sequence[str]) -> None:
        """Return ``rows`` of the fields ``names`` to their initial fill value."""
        for name in names:
            self._arrays[name][rows] = self._specs[name].fill

    def nbytes(self) -> int:
        """Memory held by the rows in use (the reserve beyond them is not touched)."""
        return sum(array.nbytes for array in self._arrays.values())
