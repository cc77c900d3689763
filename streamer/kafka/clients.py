"""Build aiokafka clients from the config, and make sure topics exist."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
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
    """A group consumer with manual commits (offsets follow finished work only)."""
    return AIOKafkaConsumer(
        group_id=config.group_id,
        group_instance_id=config.group_instance_id,
        enable_auto_commit=False,
        auto_offset_reset=config.auto_offset_reset,
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


def make_producer(config: KafkaConfig) -> AIOKafkaProducer:
    """Producer for alerts and dead letters: every write acknowledged by all replicas."""
    return AIOKafkaProducer(
        acks="all",
        enable_idempotence=config.idempotent_producer,
        linger_ms=config.producer_linger_ms,
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
    admin = AIOKafkaAdminClient(**connection_kwargs(config))
    try:
        await admin.start()
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {config.bootstrap_servers}: {exc}") from exc
    try:
        if topic not in set(await admin.list_topics()):
            if not config.create_topics:
                raise TopicSetupError(topic, "does not exist and kafka.create_topics is false")
            log.info("creating state topic %s (%d partitions, compacted)", topic, partitions)
            try:
                await admin.create_topics([NewTopic(topic, partitions, config.replication_factor,
                                                    topic_configs={"cleanup.policy": "compact"})])
            except TopicAlreadyExistsError:
                log.debug("state topic was created concurrently")
        described = await admin.describe_topics([topic])
        existing = len(described[0]["partitions"]) if described else 0
        if existing != partitions:
            raise TopicSetupError(topic, f"has {existing} partitions; the input topic has {partitions} "
                                         "(state partition p holds the devices of input partition p)")
    except KafkaError as exc:
        raise BrokerError(f"state topic setup failed: {exc}") from exc
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
