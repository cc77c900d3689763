"""Publishing a flood of dead letters: one producer call per record against one record batch per partition.

Hands ``--records`` dead letters (a poison-record flood) of a fleet of keys to
the embedded broker (Tansu, loopback, 3 partitions) and waits for every
acknowledgement, with the publisher as it was (``producer.send`` per record,
inlined below) and as it is (:class:`streamer.kafka.publisher.Publisher`,
``send_records``), alternating, best of ``--repeats``. Reports records/s and
the time until the last record was handed over (what the score loop waits for
before it scores the next batch).

Usage::

    python benchmarks/publish_batches.py --json benchmarks/publish-batches.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamer.codec import DeadLetter, encode_dead_letter
from streamer.config import KafkaConfig
from streamer.embedded_broker import EmbeddedBroker
from streamer.kafka.clients import ensure_topics, make_producer
from streamer.kafka.publisher import Publisher
from streamer.lab.bench.machine import machine_record


def letters(count: int) -> list[tuple[bytes | None, DeadLetter]]:
    out = []
    for i in range(count):
        key = f"dev-{i % 1000}"
        out.append((key.encode(), DeadLetter(
            reason="malformed_json", detail="not JSON", source_topic="readings", partition=i % 3, offset=i,
            kafka_timestamp=0, key=key, value="{", key_base64=None, value_base64="ew==", rejected_at=1)))
    return out


async def per_record(producer: Any, topic: str, batch: Sequence[tuple[bytes | None, DeadLetter]]) -> Any:
    """The publisher before record batches: one awaited send per record."""
    pending = [await producer.send(topic, value=encode_dead_letter(letter), key=key) for key, letter in batch]
    return asyncio.gather(*pending)


async def measure(kafka: KafkaConfig, count: int, repeats: int) -> dict[str, Any]:
    topic = kafka.dead_letter_topic
    await ensure_topics(kafka, [topic])
    producer = make_producer(kafka)
    await producer.start()
    batch = letters(count)
    publisher = Publisher(producer, kafka.alert_topic, topic)
    best: dict[str, tuple[float, float]] = {}
    try:
        await (await per_record(producer, topic, batch[:100]))  # metadata, connections
        for _ in range(repeats):
            for name in ("per_record", "batched"):
                started = time.perf_counter()
                done = (await per_record(producer, topic, batch) if name == "per_record"
                        else await publisher.send([], batch))
                handed = time.perf_counter() - started
                await done
                total = time.perf_counter() - started
                if name not in best or total < best[name][1]:
                    best[name] = (handed, total)
    finally:
        await producer.stop()
    result: dict[str, Any] = {"records": count}
    for name, (handed, total) in best.items():
        result[name] = {"handed_over_ms": round(handed * 1000, 1), "acknowledged_ms": round(total * 1000, 1),
                        "records_per_s": round(count / total)}
    result["ratio_records_per_s"] = round(result["batched"]["records_per_s"]
                                          / result["per_record"]["records_per_s"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    with EmbeddedBroker() as broker:
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, topic_partitions=3,
                            idempotent_producer=False, alert_topic=f"a-{uuid.uuid4().hex[:8]}",
                            dead_letter_topic=f"d-{uuid.uuid4().hex[:8]}")
        result = asyncio.run(measure(kafka, args.records, args.repeats))
    result["machine"] = machine_record()
    print(json.dumps(result, indent=1))
    args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
