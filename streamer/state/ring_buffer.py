"""Fixed-size history of the most recent readings of every device."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streamer.state.slot_table import SlotTable

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.intp]


class RingBuffers:
    """The last ``window`` readings of each device, ``channels`` wide.

    Stored in the slot table as ``<prefix>`` ``(capacity, window, channels)``
    plus ``<prefix>_head`` (next write position) and ``<prefix>_filled``
    (valid entries); the prefix defaults to ``ring``.
    Appends and reads are vectorised over a batch of distinct slots.

    >>> table = SlotTable(capacity=4)
    >>> rings = RingBuffers(table, window=3, channels=1)
    >>> slots = np.array([1])
    >>> for v in (1.0, 2.0, 3.0, 4.0):
    ...     rings.append(slots, np.array([[v]], dtype=np.float32))
    >>> rings.windows(slots)[0, :, 0].tolist()
    [2.0, 3.0, 4.0]
    """

    def __init__(self, table: SlotTable, window: int, channels: int, prefix: str = "ring") -> None:
        self.table = table
        self.window = window
        self.channels = channels
        self._ring, self._head, self._filled = prefix, f"{prefix}_head", f"{prefix}_filled"
        table.add_field(self._ring, (window, channels), np.float32, np.nan)
        table.add_field(self._head, (), np.int64, 0)
        table.add_field(self._filled, (), np.int64, 0)
        self._offsets = np.arange(window, dtype=np.int64)

    def append(self, slots: IndexArray, values: npt.NDArray[np.floating]) -> None:
        """Write one reading per slot; ``slots`` must be distinct."""
        head = self.table[self._head]
        filled = self.table[self._filled]
        ring = self.table[self._ring]
        position = head[slots]
        ring[slots, position] = values
        head[slots] = (position + 1) % self.window
        filled[slots] = np.minimum(filled[slots] + 1, self.window)

    def windows(self, slots: IndexArray) -> FloatArray:
        """The last ``window`` readings of each slot, oldest first.

        Entries not yet written are NaN (check ``filled``).
        """
        head = self.table[self._head][slots]
        index = (head[:, None] + self._offsets[None, :]) % self.window
        ring: FloatArray = self.table[self._ring]
        return ring[slots[:, None], index]

    def filled(self, slots: IndexArray) -> npt.NDArray[np.int64]:
        """How many entries of each slot's window hold readings."""
        filled: npt.NDArray[np.int64] = self.table[self._filled][slots]
        return filled
