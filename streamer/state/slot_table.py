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
from dataclasses import dataclass, field
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


@dataclass
class _Storage:
    """What a table and its scoped views share."""

    capacity: int
    reserve: int
    specs: dict[str, _Field] = field(default_factory=dict)
    blocks: dict[str, npt.NDArray[Any]] = field(default_factory=dict)  # `reserve` rows, `capacity` set
    arrays: dict[str, npt.NDArray[Any]] = field(default_factory=dict)  # views of the first `capacity` rows
    transient: set[str] = field(default_factory=set)  # fields of transient scopes: never snapshotted


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

    A *scope* is a view of the same rows whose field names carry a prefix, so
    a second instance of a component (a model being swapped in, a candidate
    scored in shadow) keeps its own state beside the first one's:

    >>> shadow = table.scoped("shadow_", transient=True)
    >>> shadow.add_field("count", (), np.int64, 5)
    >>> table.fields, shadow.fields, int(table["shadow_count"][0])
    (('count', 'shadow_count'), ('count',), 5)
    """

    def __init__(self, capacity: int, reserve: int | None = None) -> None:
        """``reserve``: rows to set aside up front (untouched memory) so growth up to it copies nothing."""
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._storage = _Storage(capacity, max(capacity, reserve or capacity))
        self._prefix = ""
        self._transient = False

    @property
    def capacity(self) -> int:
        """Rows every field has now."""
        return self._storage.capacity

    @property
    def reserve(self) -> int:
        """Rows set aside (growth up to it copies nothing)."""
        return self._storage.reserve

    @property
    def prefix(self) -> str:
        """The prefix of this view's field names in the whole table ("" for the table itself)."""
        return self._prefix

    def scoped(self, prefix: str, *, transient: bool = False) -> SlotTable:
        """A view of the same rows whose fields are named ``prefix + name`` in this table.

        ``transient``: the scope's fields are not detector state to keep
        (:attr:`stored_fields` leaves them out) until :meth:`adopt` makes them so.
        """
        view = SlotTable.__new__(SlotTable)
        view._storage = self._storage
        view._prefix = self._prefix + prefix
        view._transient = transient or self._transient
        return view

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
        storage = self._storage
        name = self._prefix + name
        spec = _Field(tuple(shape), np.dtype(dtype), fill)
        if name in storage.specs:
            if storage.specs[name].same_as(spec):
                return
            raise ValueError(f"field {name!r} is already declared with another shape, type or fill")
        storage.specs[name] = spec
        try:
            block = np.empty((storage.reserve, *spec.shape), dtype=spec.dtype)
        except MemoryError:
            log.warning("cannot set aside %d rows for %s; the table will double as it grows",
                        storage.reserve, name)
            self._release_reserve()
            block = np.empty((storage.capacity, *spec.shape), dtype=spec.dtype)
        block[: storage.capacity] = fill
        storage.blocks[name] = block
        storage.arrays[name] = block[: storage.capacity]
        if self._transient:
            storage.transient.add(name)

    def _release_reserve(self) -> None:
        """Give up the reserve: every field keeps exactly ``capacity`` rows (copies)."""
        storage = self._storage
        storage.reserve = storage.capacity
        for name, block in storage.blocks.items():
            storage.blocks[name] = block[: storage.capacity].copy()
            storage.arrays[name] = storage.blocks[name]

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        # Components look arrays up per call: growth replaces them. On the hot
        # path (the table itself) no prefix is joined.
        prefix = self._prefix
        return self._storage.arrays[prefix + name if prefix else name]

    def __contains__(self, name: str) -> bool:
        return self._prefix + name in self._storage.arrays

    @property
    def fields(self) -> tuple[str, ...]:
        """Names of the fields declared in this view (without its prefix)."""
        prefix = self._prefix
        return tuple(name[len(prefix):] for name in self._storage.specs if name.startswith(prefix))

    @property
    def stored_fields(self) -> tuple[str, ...]:
        """Fields of this view that are detector state to keep (not of a transient scope)."""
        transient = self._storage.transient
        return tuple(name for name in self.fields if self._prefix + name not in transient)

    def remove_fields(self, names: Sequence[str]) -> None:
        """Forget the fields ``names`` (their memory is freed once no one holds them)."""
        storage = self._storage
        for name in names:
            full = self._prefix + name
            del storage.specs[full], storage.blocks[full], storage.arrays[full]
            storage.transient.discard(full)

    def adopt(self, scope: SlotTable) -> None:
        """Make the fields of ``scope`` this view's own under their plain names, replacing any there.

        ``scope`` then names the same fields as this view (its components
        keep working), and they are no longer transient. Used to put a model
        that was prepared beside the running one in its place.
        """
        storage = self._storage
        prefix = scope._prefix
        if not prefix.startswith(self._prefix) or prefix == self._prefix:
            raise ValueError(f"{prefix!r} is not a scope of {self._prefix!r}")
        moving = [name for name in storage.specs if name.startswith(prefix)]
        plain = [self._prefix + name[len(prefix):] for name in moving]
        self.remove_fields([name[len(self._prefix):] for name in plain if name in storage.specs])
        for old, new in zip(moving, plain, strict=True):
            storage.specs[new] = storage.specs.pop(old)
            storage.blocks[new] = storage.blocks.pop(old)
            storage.arrays[new] = storage.arrays.pop(old)
            storage.transient.discard(old)
        scope._prefix = self._prefix
        scope._transient = self._transient

    def grow(self, min_capacity: int) -> None:
        """Make room for at least ``min_capacity`` rows: a step into the reserve, or doubling past it."""
        storage = self._storage
        if min_capacity <= storage.capacity:
            return
        old = storage.capacity
        if min_capacity <= storage.reserve:
            capacity = min(storage.reserve, max(min_capacity, old + GROWTH_ROWS))
            for name, spec in storage.specs.items():
                block = storage.blocks[name]
                block[old:capacity] = spec.fill
                storage.arrays[name] = block[:capacity]
        else:
            capacity = max(old, 1)
            while capacity < min_capacity:
                capacity *= 2
            for name, spec in storage.specs.items():
                new = np.empty((capacity, *spec.shape), dtype=spec.dtype)
                new[:old] = storage.arrays[name]
                new[old:] = spec.fill
                storage.blocks[name] = storage.arrays[name] = new
            storage.reserve = capacity
        storage.capacity = capacity

    def reset_rows(self, rows: npt.NDArray[np.intp]) -> None:
        """Return ``rows`` of every field of this view to their initial fill value."""
        self.reset_fields(rows, self.fields)

    def reset_fields(self, rows: npt.NDArray[np.intp], names: Sequence[str]) -> None:
        """Return ``rows`` of the fields ``names`` to their initial fill value."""
        storage = self._storage
        for name in names:
            full = self._prefix + name
            storage.arrays[full][rows] = storage.specs[full].fill

    def nbytes(self) -> int:
        """Memory held by the rows in use of this view's fields (the reserve beyond them is not touched)."""
        prefix = self._prefix
        return sum(array.nbytes for name, array in self._storage.arrays.items() if name.startswith(prefix))
