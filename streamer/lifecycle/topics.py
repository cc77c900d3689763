"""Reading the most recent records of a topic, outside any consumer group.

Retraining and promotion read the input, alert, shadow alert and feedback
topics as they are now: per partition, the last ``per_partition`` records up
to the high watermark the fetches report (``end_offsets()`` is unreliable on
some Kafka-protocol brokers, Tansu among them: it may lag, so it only picks
where reading starts, and the result is trimmed to ``per_partition``). No group is joined and no
offset is committed, so the daemons' own consumption is untouched.
"""

from __future__ import annotations

import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streamer.codec import Record
from streamer.config import KafkaConfig
from streamer.errors import BrokerError
from streamer.kafka.clients import make_reader

log = logging.getLogger(__name__)

# Records per fetch: bounds one fetch's memory, not the total.
FETCH_RECORDS = 10_000
FETCH_TIMEOUT_MS = 500
# Reading ends when every partition reached the high watermark its fetch
# reported, or when nothing arrives for this long although the broker reported
# more (records removed by retention meanwhile).
IDLE_TIMEOUT_S = 10.0


class MissingTopicError(BrokerError):
    """The topic does not exist."""

    retriable = False

    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(f"topic {topic!r} does not exist")


async def recent_records(kafka: KafkaConfig, topic: str, *, per_partition: int,
                         idle_timeout_s: float = IDLE_TIMEOUT_S) -> list[Record]:
    """The last ``per_partition`` records of every partition of ``topic``, each partition in offset order.

    Raises:
        MissingTopicError: ``topic`` does not exist.
        BrokerError: The cluster is unreachable or answered with an error.
    """
    reader: AIOKafkaConsumer = make_reader(kafka, max_records=min(per_partition, FETCH_RECORDS))
    records: list[Record] = []
    try:
        await reader.start()
        if topic not in await reader.topics():
            raise MissingTopicError(topic)
        partitions = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
        reader.assign(partitions)
        ends = await reader.end_offsets(partitions)
        starts = await reader.beginning_offsets(partitions)
        for tp in partitions:
            reader.seek(tp, max(starts[tp], ends[tp] - per_partition))
        # Every partition, even one reported empty: the reported end may lag.
        pending = set(partitions)
        by_partition: dict[TopicPartition, list[Record]] = {tp: [] for tp in partitions}
        idle_since = time.monotonic()
        while pending:
            fetched = await reader.getmany(*pending, timeout_ms=FETCH_TIMEOUT_MS)
            if any(fetched.values()):
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > idle_timeout_s:
                log.warning("%s: no record for %.0f s before the end of partition(s) %s; using what arrived",
                            topic, idle_timeout_s, sorted(tp.partition for tp in pending))
                break
            for tp, batch in fetched.items():
                by_partition[tp].extend(batch)
            for tp in list(pending):
                highwater = reader.highwater(tp)
                if highwater is not None and await reader.position(tp) >= highwater:
                    pending.discard(tp)
        for tp in partitions:
            records.extend(by_partition[tp][-per_partition:])
    except KafkaError as exc:
        raise BrokerError(f"reading {topic!r} at {kafka.bootstrap_servers}: {exc}") from exc
    finally:
        await reader.stop()
    log.info("read %d record(s) of %s", len(records), topic)
    return records


async def recent_records_or_none(kafka: KafkaConfig, topic: str, *, per_partition: int,
                                 idle_timeout_s: float = IDLE_TIMEOUT_S) -> list[Record]:
    """:func:`recent_records`, with a topic that does not exist (yet) read as empty."""
    try:
        return await recent_records(kafka, topic, per_partition=per_partition, idle_timeout_s=idle_timeout_s)
    except MissingTopicError:
        log.warning("topic %s does not exist: read as empty", topic)
        return []
