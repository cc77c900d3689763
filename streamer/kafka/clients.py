"""Build aiokafka clients from the config, make sure topics exist, and steer the consumer.

The steering helpers keep two aiokafka behaviours explicit:

- pausing: aiokafka keeps one paused flag per partition, but the daemon
  pauses for two independent reasons (a partition's state is being restored;
  the scoring queue is full). :class:`PartitionPauses` tracks the reasons and
  resumes a partition only once none is left.
- offset resets: with ``auto_offset_reset`` set, aiokafka resets an
  out-of-range position silently. The group consumer is built with ``none``
  instead, so the error reaches the daemon, which resets with
  :func:`reset_positions` to the configured end, counts and logs it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Literal, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from streamer.config import KafkaConfig
from streamer.errors import BrokerError, TopicSetupError

log = logging.getLogger(__name__)


def connection_kwargs(config: KafkaConfig) -> dict[str, Any]:
    """Address and security settings shared by every client."""
    security = config.security
    kwargs: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap_servers,
        "client_id": config.client_id,
        "security_protocol": security.protocol,
        "request_timeout_ms": config.request_timeout_ms,
    }
    if security.protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = create_ssl_context(
            cafile=security.ssl_cafile, certfile=security.ssl_certfile, keyfile=security.ssl_keyfile
        )
    if security.protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = security.sasl_mechanism
        kwargs["sasl_plain_username"] = security.sasl_username
        kwargs["sasl_plain_password"] = security.password()
    return kwargs


def make_consumer(config: KafkaConfig, *, max_records: int) -> AIOKafkaConsumer:
    """A group consumer with manual commits (offsets follow finished work only).

    Its ``auto_offset_reset`` is ``none``: a partition without a committed
    offset or with one out of range raises from ``getmany``, and the caller
    resets it to ``config.auto_offset_reset`` with :func:`reset_positions`
    (aiokafka would otherwise reset silently).
    """
    return AIOKafkaConsumer(
        group_id=config.group_id,
        group_instance_id=config.group_instance_id,
        enable_auto_commit=False,
        auto_offset_reset="none",
        max_poll_records=min(config.max_poll_records, max_records),
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        session_timeout_ms=config.session_timeout_ms,
        heartbeat_interval_ms=config.heartbeat_interval_ms,
        max_poll_interval_ms=config.max_poll_interval_ms,
        **connection_kwargs(config),
    )


def make_reader(config: KafkaConfig, *, max_records: int) -> AIOKafkaConsumer:
    """A consumer outside any group, for reading partitions by hand (state restore and replay).

    It never commits and never joins the group, so it cannot disturb the
    daemon's own assignment. A seek below the log start resets to the
    earliest offset still held.
    """
    return AIOKafkaConsumer(
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_records,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        **connection_kwargs(config),
    )


def make_feedback_consumer(config: KafkaConfig, *, group_id: str, max_records: int) -> AIOKafkaConsumer:
    """A consumer assigned by hand whose offsets are kept under ``group_id`` (operator feedback).

    It never joins the group (no subscription), so it cannot disturb the
    daemon's own assignment; the caller seeks every partition it assigns.
    """
    return AIOKafkaConsumer(
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_records,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        **connection_kwargs(config),
    )


PRODUCER_MAX_BATCH_BYTES = 256 * 1024


def make_producer(config: KafkaConfig) -> AIOKafkaProducer:
    """Producer for alerts and dead letters: every write acknowledged by all replicas."""
    return AIOKafkaProducer(
        acks="all",
        enable_idempotence=config.idempotent_producer,
        linger_ms=config.producer_linger_ms,
        # Record batches up to this size (aiokafka's default is 16 KiB): a snapshot slice of
        # 1,000 devices (1.1 MB) then takes a few requests per partition instead of a dozen
        # sequential ones (39.5 -> 9.7 ms per slice on loopback; benchmarks/performance.md).
        # Well under the 1 MB request limit of brokers' defaults.
        max_batch_size=PRODUCER_MAX_BATCH_BYTES,
        **connection_kwargs(config),
    )


async def ensure_topics(config: KafkaConfig, topics: Sequence[str]) -> None:
    """Create the topics that do not exist yet (when ``kafka.create_topics``).

    Raises:
        TopicSetupError: A topic is missing and may not or could not be created.
        BrokerError: The cluster could not be reached.
    """
    admin = AIOKafkaAdminClient(**connection_kwargs(config))
    try:
        await admin.start()
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {config.bootstrap_servers}: {exc}") from exc
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if not missing:
            return
        if not config.create_topics:
            raise TopicSetupError(missing[0], "does not exist and kafka.create_topics is false")
        log.info("creating topics %s (%d partitions, replication %d)", missing,
                 config.topic_partitions, config.replication_factor)
        try:
            await admin.create_topics([
                NewTopic(name, config.topic_partitions, config.replication_factor) for name in missing
            ])
        except TopicAlreadyExistsError:
            log.debug("topics were created concurrently")
    except KafkaError as exc:
        raise BrokerError(f"topic setup failed: {exc}") from exc
    finally:
        await admin.close()


async def ensure_state_topic(config: KafkaConfig, topic: str, partitions: int) -> None:
    """Create the compacted state topic with ``partitions`` partitions, or check the existing one.

    Snapshots of input partition ``p`` live in state partition ``p``, so the
    two topics must have the same number of partitions.

    Raises:
        TopicSetupError: Missing and may not be created, or its partition
            count differs from ``partitions``.
        BrokerError: The cluster could not be reached.
    """
    await ensure_copartitioned_topic(config, topic, partitions, compacted=True,
                                     why="state partition p holds the devices of input partition p")


async def ensure_copartitioned_topic(config: KafkaConfig, topic: str, partitions: int, *, compacted: bool,
                                     why: str) -> None:
    """Create ``topic`` with the input topic's ``partitions`` partitions, or check the existing one.

    Raises:
        TopicSetupError: Missing and may not be created, or its partition
            count differs from ``partitions`` (``why`` says why it must not).
        BrokerError: The cluster could not be reached.
    """
    admin = AIOKafkaAdminClient(**connection_kwargs(config))
    try:
        await admin.start()
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {config.bootstrap_servers}: {exc}") from exc
    try:
        if topic not in set(await admin.list_topics()):
            if not config.create_topics:
                raise TopicSetupError(topic, "does not exist and kafka.create_topics is false")
            log.info("creating topic %s (%d partitions%s)", topic, partitions,
                     ", compacted" if compacted else "")
            configs = {"cleanup.policy": "compact"} if compacted else {}
            try:
                await admin.create_topics([NewTopic(topic, partitions, config.replication_factor,
                                                    topic_configs=configs)])
            except TopicAlreadyExistsError:
                log.debug("topic %s was created concurrently", topic)
        described = await admin.describe_topics([topic])
        existing = len(described[0]["partitions"]) if described else 0
        if existing != partitions:
            raise TopicSetupError(topic,
                                  f"has {existing} partitions; the input topic has {partitions} ({why})")
    except KafkaError as exc:
        raise BrokerError(f"setup of topic {topic} failed: {exc}") from exc
    finally:
        await admin.close()


async def partition_count(producer: AIOKafkaProducer, topic: str) -> int:
    """Partitions of ``topic`` from the producer's metadata.

    Raises:
        TopicSetupError: The topic is unknown to the cluster.
    """
    partitions = await producer.partitions_for(topic)
    if not partitions:
        raise TopicSetupError(topic, "has no partitions in the cluster metadata")
    return len(partitions)


class PausableConsumer(Protocol):
    """What :class:`PartitionPauses` needs of a consumer (AIOKafkaConsumer fits)."""

    def assignment(self) -> set[Any]:
        """The partitions assigned now."""
        ...

    def paused(self) -> set[Any]:
        """The assigned partitions paused now."""
        ...

    def pause(self, *partitions: Any) -> None:
        """Stop fetching ``partitions`` (their prefetched records are dropped)."""
        ...

    def resume(self, *partitions: Any) -> None:
        """Fetch ``partitions`` again."""
        ...


class PartitionPauses:
    """Pause reasons per partition; a partition is fetched only while it has none.

    A reason is either held by single partitions (``pause``/``resume``) or by
    the whole assignment (``pause_all``/``resume_all``, which also covers
    partitions assigned later). The consumer is brought in line at once, so
    a pause made inside a rebalance callback takes effect before any fetch.
    """

    def __init__(self, consumer: PausableConsumer) -> None:
        self.consumer = consumer
        self._partitions: dict[Any, set[str]] = {}
        self._everywhere: set[str] = set()

    def pause(self, partitions: Iterable[Any], reason: str) -> None:
        """Pause ``partitions`` for ``reason``."""
        for tp in partitions:
            self._partitions.setdefault(tp, set()).add(reason)
        self.apply()

    def resume(self, partitions: Iterable[Any], reason: str) -> None:
        """Drop ``reason`` from ``partitions``; those left without a reason are fetched again."""
        for tp in partitions:
            reasons = self._partitions.get(tp)
            if reasons is not None:
                reasons.discard(reason)
                if not reasons:
                    del self._partitions[tp]
        self.apply()

    def pause_all(self, reason: str) -> None:
        """Pause every partition, now and later assigned, for ``reason``."""
        self._everywhere.add(reason)
        self.apply()

    def resume_all(self, reason: str) -> None:
        """Drop an assignment-wide ``reason``."""
        self._everywhere.discard(reason)
        self.apply()

    def forget(self, partitions: Collection[Any]) -> None:
        """Drop every reason of partitions that are no longer assigned."""
        for tp in partitions:
            self._partitions.pop(tp, None)

    def reasons(self, tp: Any) -> set[str]:
        """Why ``tp`` is paused (empty: it is fetched)."""
        return self._partitions.get(tp, set()) | self._everywhere

    def count(self, reason: str) -> int:
        """Assigned partitions paused for ``reason``."""
        return sum(1 for tp in self.consumer.assignment() if reason in self.reasons(tp))

    def apply(self) -> None:
        """Pause and resume the consumer's partitions to match the reasons."""
        assigned = self.consumer.assignment()
        wanted = {tp for tp in assigned if self.reasons(tp)}
        paused = self.consumer.paused()
        if to_pause := wanted - paused:
            self.consumer.pause(*to_pause)
        if to_resume := (paused & assigned) - wanted:
            self.consumer.resume(*to_resume)


class SeekingConsumer(Protocol):
    """What :func:`reset_positions` needs of a consumer (AIOKafkaConsumer fits)."""

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


class ProbedConsumer(Protocol):
    """What :func:`broker_answers` needs of a consumer (AIOKafkaConsumer fits)."""

    async def beginning_offsets(self, partitions: Sequence[TopicPartition]) -> Any:
        """The log start offset of each partition."""
        ...


async def reset_positions(consumer: SeekingConsumer, partitions: Collection[TopicPartition],
                          policy: Literal["earliest", "latest"]) -> dict[TopicPartition, int]:
    """Move ``partitions`` to their log start (``earliest``) or end (``latest``); returns the new positions.

    Partitions no longer assigned are skipped.
    """
    assigned = [tp for tp in partitions if tp in consumer.assignment()]
    if not assigned:
        return {}
    if policy == "earliest":
        await consumer.seek_to_beginning(*assigned)
    else:
        await consumer.seek_to_end(*assigned)
    return {tp: await consumer.position(tp) for tp in assigned}


async def broker_answers(consumer: ProbedConsumer, tp: TopicPartition, timeout_s: float) -> bool:
    """Whether the leader of ``tp`` answers a small request (its log start offset) within ``timeout_s``."""
    try:
        await asyncio.wait_for(consumer.beginning_offsets([tp]), timeout_s)
    except (KafkaError, TimeoutError, OSError) as exc:
        log.debug("broker probe failed: %r", exc)
        return False
    return True
