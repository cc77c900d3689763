"""Device id → slot mapping over a growing slot table."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from streamer.state.ring_buffer import RingBuffers
from streamer.state.slot_table import SlotTable

log = logging.getLogger(__name__)

# Marks "no slot": the device could not be admitted (registry full).
NO_SLOT = -1
# No reading accepted yet: any real timestamp is newer.
NEVER = np.iinfo(np.int64).min


class DeviceRegistry:
    """Assigns each device a row in the shared slot table.

    Holds the fields every device has regardless of the model: the last
    accepted event timestamp and the number of accepted readings, plus the
    ring buffer of recent readings.
    """

    def __init__(self, *, window: int, channels: int, initial_devices: int, max_devices: int) -> None:
        self.max_devices = max_devices
        self.table = SlotTable(min(initial_devices, max_devices))
        self.table.add_field("last_ts", (), np.int64, NEVER)
        self.table.add_field("seen", (), np.int64, 0)
        self.rings = RingBuffers(self.table, window=window, channels=channels)
        self._slot_of: dict[str, int] = {}
        self._ids: list[str] = []

    def __len__(self) -> int:
        return len(self._ids)

    def device_id(self, slot: int) -> str:
        """The id of the device in ``slot``."""
        return self._ids[slot]

    def slot(self, device_id: str) -> int | None:
        """The slot of a known device, or None."""
        return self._slot_of.get(device_id)

    def resolve(self, device_ids: Sequence[str]) -> npt.NDArray[np.intp]:
        """Slots for a batch of device ids, admitting new devices.

        Returns:
            One slot per id; ``NO_SLOT`` where a new device would exceed
            ``max_devices``.
        """
        slot_of = self._slot_of
        slots = np.fromiter(
            (slot_of.get(device_id, NO_SLOT) for device_id in device_ids),
            dtype=np.intp,
            count=len(device_ids),
        )
        missing = np.flatnonzero(slots == NO_SLOT)
        if missing.size:
            self._admit(device_ids, slots, missing)
        return slots

    def _admit(
        self, device_ids: Sequence[str], slots: npt.NDArray[np.intp], missing: npt.NDArray[np.intp]
    ) -> None:
        for row in missing.tolist():
            device_id = device_ids[row]
            slot = self._slot_of.get(device_id)  # the same new id may repeat in a batch
            if slot is None:
                if len(self._ids) >= self.max_devices:
                    continue
                slot = len(self._ids)
                self._slot_of[device_id] = slot
                self._ids.append(device_id)
            slots[row] = slot
        if len(self._ids) > self.table.capacity:
            self.table.grow(len(self._ids))
            log.info("device table grown to %d slots (%.1f MiB)",
                     self.table.capacity, self.table.nbytes() / 2**20)

    def warming_up(self, warmup: int) -> int:
        """How many known devices have fewer than ``warmup`` accepted readings."""
        seen = self.table["seen"][: len(self._ids)]
        return int(np.count_nonzero(seen < warmup))
