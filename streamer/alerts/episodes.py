"""Alert episodes per device: open on the first flagged reading, resolve after calm.

An episode is identified by (device, episode start, model version), hashed
into a deterministic alert id, so a replay after a crash or rebalance emits
the same id and subscribers can drop repeats.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamer.state.slot_table import SlotTable

IndexArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

# Fixed namespace: alert ids must be identical across processes and releases.
ALERT_NAMESPACE = uuid.UUID("6f1c2a52-4d0e-4a57-9a47-7c1f0c2b9e31")


def alert_id(device_id: str, episode_start_ts: int, model_version: str) -> str:
    """Deterministic id of an alert episode.

    >>> alert_id("pump-17", 1700000000000, "v1") == alert_id("pump-17", 1700000000000, "v1")
    True
    """
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{device_id}\x1f{episode_start_ts}\x1f{model_version}"))


@dataclass(frozen=True)
class EpisodeChanges:
    """Rows (into the round) whose reading opened or resolved an episode."""

    opened: IndexArray
    resolved: IndexArray
    episode_start: npt.NDArray[np.int64]  # per row of the round


class EpisodeTracker:
    """Vectorised open/resolve state machine over device slots."""

    def __init__(self, table: SlotTable, resolve_after: int) -> None:
        self.table = table
        self.resolve_after = resolve_after
        table.add_field("ep_open", (), np.bool_, False)
        table.add_field("ep_start_ts", (), np.int64, 0)
        table.add_field("ep_calm", (), np.int64, 0)

    def update(
        self, slots: IndexArray, ts: npt.NDArray[np.int64], anomalous: BoolArray, scored: BoolArray
    ) -> EpisodeChanges:
        """Advance each slot's episode by one reading.

        Args:
            slots: Distinct slots.
            ts: Event timestamps (ms).
            anomalous: The threshold's decision.
            scored: Rows past warm-up; others leave episodes untouched.
        """
        is_open = self.table["ep_open"][slots].astype(bool)
        start = self.table["ep_start_ts"][slots]
        calm = self.table["ep_calm"][slots]

        opens = scored & anomalous & ~is_open
        continues = scored & anomalous & is_open
        quiet = scored & ~anomalous & is_open
        calm = np.where(opens | continues, 0, np.where(quiet, calm + 1, calm))
        resolves = quiet & (calm >= self.resolve_after)
        start = np.where(opens, ts, start)
        is_open = (is_open | opens) & ~resolves

        self.table["ep_open"][slots] = is_open
        self.table["ep_start_ts"][slots] = start
        self.table["ep_calm"][slots] = np.where(resolves, 0, calm)
        return EpisodeChanges(
            opened=np.flatnonzero(opens), resolved=np.flatnonzero(resolves), episode_start=start
        )

    def open_count(self) -> int:
        """Devices with an open episode."""
        return int(np.count_nonzero(self.table["ep_open"]))
