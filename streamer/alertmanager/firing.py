"""The episodes firing now, per partition, and the offset each partition may commit.

An episode lives in one partition (alerts are keyed by device id). While it
fires, its partition commits no offset past the record that first showed it,
so a bridge that restarts (or takes the partition over) reads that record
again and the episode fires again: see ``streamer.alertmanager.bridge``.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterator
from dataclasses import dataclass

from streamer.alertmanager.events import AlertEvent


@dataclass(frozen=True)
class Episode:
    """An episode as the bridge knows it."""

    first: AlertEvent  # labels come from here (see streamer.alertmanager.payload)
    latest: AlertEvent
    partition: Hashable
    first_offset: int  # offset of the record that first showed the episode

    @property
    def alert_id(self) -> str:
        """The episode's id."""
        return self.first.alert.alert_id

    @property
    def firing(self) -> bool:
        """Whether the latest event leaves it firing."""
        return self.latest.alert.event != "resolve"


class FiringSet:
    """Firing episodes by alert id.

    >>> from streamer.alertmanager.events import decode_event
    >>> def event(kind):
    ...     return decode_event(('{"alert_id": "a", "event": "%s", "device_id": "d", "ts": 2, '
    ...         '"episode_start_ts": 1, "channel": "value", "actual": 1, "forecast": 0, "residual": 1, '
    ...         '"smoothed_residual": null, "threshold": null, "score": 0.99, "method": "zscore", '
    ...         '"model_version": "v", "processing_ms": 0, "latency_ms": 0}' % kind).encode())
    >>> firing = FiringSet()
    >>> firing.apply(event("open"), "p0", 7).firing, firing.commit_offset("p0", 12)
    (True, 7)
    >>> firing.apply(event("resolve"), "p0", 11).first_offset, len(firing), firing.commit_offset("p0", 12)
    (7, 0, 12)
    """

    def __init__(self) -> None:
        self._episodes: dict[str, Episode] = {}

    def __len__(self) -> int:
        return len(self._episodes)

    def __iter__(self) -> Iterator[Episode]:
        return iter(list(self._episodes.values()))

    def apply(self, event: AlertEvent, partition: Hashable, offset: int) -> Episode:
        """Take in one event (records of a partition in offset order); returns the episode after it."""
        alert_id = event.alert.alert_id
        known = self._episodes.get(alert_id)
        episode = Episode(first=event if known is None else known.first, latest=event, partition=partition,
                          first_offset=offset if known is None else known.first_offset)
        if episode.firing:
            self._episodes[alert_id] = episode
        else:
            self._episodes.pop(alert_id, None)
        return episode

    def commit_offset(self, partition: Hashable, frontier: int) -> int:
        """The offset ``partition`` may commit once every record before ``frontier`` was delivered."""
        firing = [e.first_offset for e in self._episodes.values() if e.partition == partition]
        return min([frontier, *firing])

    def forget(self, alert_id: str) -> None:
        """Stop tracking one episode (Alertmanager refused it for good)."""
        self._episodes.pop(alert_id, None)

    def drop(self, partitions: Collection[Hashable]) -> int:
        """Forget the episodes of partitions this bridge no longer owns; returns how many."""
        gone = [key for key, episode in self._episodes.items() if episode.partition in partitions]
        for key in gone:
            del self._episodes[key]
        return len(gone)
