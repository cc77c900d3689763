"""Reading the outcome back from Kafka with independent clients (no daemon metrics involved).

Metrics die with a SIGKILLed process; Kafka does not. Topics are read from
their beginning to the high watermark each fetch reports (``end_offsets()``
is unreliable on some Kafka-protocol brokers, Tansu among them), and the
group's committed offsets are asked of the group coordinator by a client
that never joins the group.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.codec import Alert, DeadLetter, decode_alert
from streamer.config import KafkaConfig
from streamer.kafka.clients import connection_kwargs, make_reader
from streamer.lab.chaos.verdict import DeadLetterSeen

log = logging.getLogger(__name__)

_letter_decoder = msgspec.json.Decoder(DeadLetter)


async def read_topic(config: KafkaConfig, topic: str, partitions: int, *,
                     timeout_s: float = 120.0) -> dict[int, list[Any]]:
    """Every record of ``topic``, per partition, in offset order.

    Raises:
        TimeoutError: The ends were not reached within ``timeout_s``.
    """
    reader = make_reader(config, max_records=10_000)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        out: dict[int, list[Any]] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + timeout_s
        pending = set(tps)
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: partitions {sorted(tp.partition for tp in pending)} "
                                   f"did not reach their end in {timeout_s:.0f}s")
            batches = await reader.getmany(*pending, timeout_ms=300)
            for tp, records in batches.items():
                out[tp.partition].extend(records)
            for tp in list(pending):
                highwater = reader.highwater(tp)
                if highwater is not None and await reader.position(tp) >= highwater:
                    pending.discard(tp)
        return out
    finally:
        await reader.stop()


async def committed_offsets(config: KafkaConfig, topic: str, partitions: int) -> dict[int, int | None]:
    """The group's committed offset of each partition of ``topic`` (None: never committed)."""
    consumer = AIOKafkaConsumer(group_id=config.group_id, enable_auto_commit=False,
                                **connection_kwargs(config))
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


async def wait_committed(config: KafkaConfig, topic: str, ends: dict[int, int], timeout_s: float,
                         poll_s: float = 1.0) -> bool:
    """Wait until the committed offset of every partition reaches ``ends`` (next offset after the last).

    Returns:
        Whether it did within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    behind: dict[int, int] = dict(ends)
    while True:
        committed = await committed_offsets(config, topic, max(ends, default=-1) + 1)
        behind = {p: end - (committed.get(p) or 0) for p, end in ends.items()
                  if (committed.get(p) or 0) < end}
        if not behind:
            return True
        if time.monotonic() > deadline:
            log.warning("commits still behind the produced ends after %.0fs: %s", timeout_s, behind)
            return False
        await asyncio.sleep(poll_s)


def alerts_of(records: dict[int, list[Any]]) -> list[Alert]:
    """Decoded alerts, in partition then offset order."""
    return [decode_alert(r.value) for p in sorted(records) for r in records[p] if r.value is not None]


def dead_letters_of(records: dict[int, list[Any]], source_topic: str) -> list[DeadLetterSeen]:
    """Where each dead letter of ``source_topic`` came from, and why."""
    seen: list[DeadLetterSeen] = []
    for p in sorted(records):
        for record in records[p]:
            letter = _letter_decoder.decode(record.value)
            if letter.source_topic == source_topic:
                seen.append(DeadLetterSeen(letter.partition, letter.offset, letter.reason))
    return seen
