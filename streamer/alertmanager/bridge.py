"""The bridge loop: fetch alert records, post their episodes to Alertmanager, commit, resend.

Each fetched batch is decoded, folded into the firing set (one entry per
episode: its latest event wins within the batch, so a replayed ``open``
and its ``resolve`` in one batch post only the resolve), posted in one
request, and its offsets are committed only after Alertmanager accepted it
(``streamer.alertmanager.delivery`` retries while it is down). Every
``resend_interval_s`` the firing episodes are posted again with ``endsAt``
``ends_after_intervals`` intervals ahead, as Alertmanager expects of its
clients: an alert whose ``endsAt`` passes resolves, so a bridge that dies
leaves no alert firing forever.

Firing episodes across restarts: **held-back commits**. A partition commits
no offset past the first record of any episode still firing in it
(:meth:`FiringSet.commit_offset`). A bridge that crashes, restarts or takes
the partition over in a rebalance resumes at or before the ``open`` of
every episode still firing there, reads it again, and so rebuilds exactly
the firing set the last owner had, re-posting what it reads (posts are
idempotent in Alertmanager: same labels, same alert). Chosen over:

- re-reading the topic from a fixed earlier position: no position is safe
  for an episode of any length, and every start would pay for the re-read;
- a compacted topic of firing episodes: a second write per event that must
  be made atomic with the offset commit (a transaction) to be right after a
  crash; held-back commits need no extra state at all.

The price: while an episode fires its partition's committed offset stays
at its ``open``, so consumer-group lag shows the records since then and a
restart re-reads them (alert topics are small: an episode is a few records),
and an episode whose ``open`` falls out of the topic's retention while it
still fires is lost on restart (out-of-range offsets reset to the earliest
record still held). A revoked partition's episodes are dropped here; the
new owner rebuilds them the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal, Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError

from streamer.alertmanager.delivery import Delivered, Delivery
from streamer.alertmanager.events import Rejected, decode_event
from streamer.alertmanager.firing import Episode, FiringSet
from streamer.alertmanager.metrics import BridgeMetrics
from streamer.alertmanager.payload import AlertStyle, to_alertmanager
from streamer.codec import Record
from streamer.config import AlertmanagerConfig
from streamer.kafka.clients import reset_positions

log = logging.getLogger(__name__)

# Longest wait for records, so a resend or a stop request is never late by more.
POLL_S = 0.5


class AlertConsumer(Protocol):
    """What the bridge needs of its consumer (AIOKafkaConsumer fits)."""

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> Mapping[TopicPartition, Sequence[Any]]:
        """Fetched records per partition."""
        ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` for the group."""
        ...

    def assignment(self) -> set[TopicPartition]:
        """The partitions assigned now."""
        ...

    async def seek_to_beginning(self, *partitions: TopicPartition) -> Any:
        """Move ``partitions`` to their log start."""
        ...

    async def seek_to_end(self, *partitions: TopicPartition) -> Any:
        """Move ``partitions`` to their log end."""
        ...

    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record to fetch from ``tp``."""
        ...


def _wall_ms() -> int:
    return int(time.time() * 1000)


class Bridge:
    """Alert records in, Alertmanager alerts out, offsets committed behind them."""

    def __init__(self, consumer: AlertConsumer, delivery: Delivery, config: AlertmanagerConfig,
                 metrics: BridgeMetrics, *, new_group_policy: Literal["earliest", "latest"] = "earliest",
                 wall_ms: Callable[[], int] = _wall_ms,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.consumer = consumer
        self.delivery = delivery
        self.config = config
        self.metrics = metrics
        self.style = AlertStyle.from_config(config)
        self.new_group_policy = new_group_policy
        self.firing = FiringSet()
        self._committed: dict[TopicPartition, int] = {}
        self._wall_ms = wall_ms
        self._monotonic = monotonic

    @property
    def firing_for_ms(self) -> int:
        """How far ahead a firing alert's endsAt lies."""
        return int(self.config.resend_interval_s * self.config.ends_after_intervals * 1000)

    def listener(self) -> ConsumerRebalanceListener:
        """The rebalance listener to subscribe with."""
        return _Rebalance(self)

    def release(self, partitions: Collection[TopicPartition]) -> None:
        """Forget the episodes and commits of revoked partitions (their new owner rebuilds them)."""
        dropped = self.firing.drop(set(partitions))
        for tp in partitions:
            self._committed.pop(tp, None)
        self.metrics.firing.set(len(self.firing))
        if dropped:
            log.info("released %d firing episodes of revoked partitions %s", dropped, sorted(partitions))

    async def run(self, stop: asyncio.Event) -> None:
        """Bridge until ``stop`` is set (a delivery still waiting then is abandoned, uncommitted)."""
        interval = self.config.resend_interval_s
        next_resend = self._monotonic() + interval
        while not stop.is_set():
            wait_s = min(POLL_S, max(0.0, next_resend - self._monotonic()))
            fetched = await self._fetch(wait_s)
            if any(fetched.values()):
                await self.handle(fetched)
            if self._monotonic() >= next_resend:
                await self.resend()
                next_resend = self._monotonic() + interval

    async def handle(self, fetched: Mapping[TopicPartition, Sequence[Record]]) -> None:
        """Post the episodes a fetched batch changed, then commit its offsets."""
        changed: dict[str, Episode] = {}
        for tp, records in fetched.items():
            for record in records:
                decoded = decode_event(record.value)
                if isinstance(decoded, Rejected):
                    self.metrics.records_rejected.labels(decoded.reason).inc()
                    log.warning("skipped record %s[%d]@%d: %s (%s)", tp.topic, tp.partition, record.offset,
                                decoded.reason, decoded.detail)
                    continue
                episode = self.firing.apply(decoded, tp, record.offset)
                changed.pop(episode.alert_id, None)  # re-inserted: posted in the order of its last event
                changed[episode.alert_id] = episode
        episodes = list(changed.values())
        delivered = await self._post(episodes)
        for episode, accepted in zip(episodes, delivered.accepted, strict=True):
            if accepted:
                self.metrics.posted.labels(episode.latest.alert.event).inc()
        await self._commit({tp: self.firing.commit_offset(tp, records[-1].offset + 1)
                            for tp, records in fetched.items() if records})

    async def resend(self) -> None:
        """Post every firing episode again, so Alertmanager keeps it firing."""
        episodes = list(self.firing)
        if not episodes:
            return
        delivered = await self._post(episodes)
        self.metrics.posted.labels("resend").inc(delivered.accepted.count(True))
        log.debug("resent %d firing episodes", len(episodes))

    async def _post(self, episodes: Sequence[Episode]) -> Delivered:
        now = self._wall_ms()
        firing_for = self.firing_for_ms
        payloads = [to_alertmanager(e.first, e.latest, self.style, now_ms=now, firing_for_ms=firing_for)
                    for e in episodes]
        delivered = await self.delivery.deliver(payloads)
        # Refused for good (a 4xx on its own): resending it would only be refused again, and
        # holding its partition's commit back for it would keep a record nobody can deliver.
        for episode, accepted in zip(episodes, delivered.accepted, strict=True):
            if not accepted:
                self.firing.forget(episode.alert_id)
        self.metrics.firing.set(len(self.firing))
        return delivered

    async def _fetch(self, wait_s: float) -> Mapping[TopicPartition, Sequence[Record]]:
        try:
            return await self.consumer.getmany(timeout_ms=int(wait_s * 1000),
                                               max_records=self.config.max_batch)
        except OffsetOutOfRangeError as exc:
            # The committed offset left the log (retention): rebuild from what is still held.
            await self._reset(exc, "earliest", "out of range")
        except NoOffsetForPartitionError as exc:
            await self._reset(exc, self.new_group_policy, "no committed offset")
        return {}

    async def _reset(self, exc: KafkaError, policy: Literal["earliest", "latest"], why: str) -> None:
        partitions = _partitions_of(exc)
        positions = await reset_positions(self.consumer, partitions, policy)
        log.warning("%s: reset %s to %s", why, {f"{tp.topic}[{tp.partition}]": position
                                                 for tp, position in positions.items()}, policy)

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        advanced = {tp: offset for tp, offset in offsets.items()
                    if offset > self._committed.get(tp, -1) and tp in self.consumer.assignment()}
        if not advanced:
            return
        try:
            await self.consumer.commit(advanced)
        except KafkaError as exc:  # e.g. a rebalance took the partition: its next owner re-reads
            log.warning("offset commit failed (%r); those alerts will be posted again", exc)
            return
        self._committed.update(advanced)
        self.metrics.committed.inc()


def _partitions_of(exc: KafkaError) -> list[TopicPartition]:
    """The partitions an aiokafka position error names (in its args, alone or as mapping keys)."""
    found: list[TopicPartition] = []
    for arg in exc.args:
        if isinstance(arg, TopicPartition):
            found.append(arg)
        elif isinstance(arg, Mapping):
            found.extend(tp for tp in arg if isinstance(tp, TopicPartition))
    return found


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Every fetched batch is posted and committed before the next fetch,
        # and a rebalance runs inside a fetch: nothing is in flight here.
        self.bridge.release(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
