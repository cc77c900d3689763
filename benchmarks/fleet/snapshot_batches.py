"""A snapshot slice (1,000 devices x 1.1 KB) sent as record batches of several sizes to the embedded broker.

    python benchmarks/fleet/snapshot_batches.py --json benchmarks/fleet/snapshot-batches.json

aiokafka's producer builds record batches of at most ``max_batch_size``
(default 16 KiB): a 1.1 MB slice is then ~70 batches, a dozen sequential
requests per partition. Each size is timed over 20 slices (median and max of
send-to-every-acknowledgement), alternating sizes, on a fresh broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

from streamer.config import load_config
from streamer.embedded_broker import EmbeddedBroker
from streamer.json_output import write_json
from streamer.kafka.batching import send_records
from streamer.kafka.clients import ensure_topics
from streamer.lab.bench.machine import machine_record

SIZES = (16_384, 131_072, 262_144, 524_288)
SLICES = 20
DEVICES = 1_000
ROW_BYTES = 1_100
PARTITIONS = 6


async def _time_size(bootstrap: str, max_batch: int, round_: int) -> list[float]:
    base = load_config(None, environ={})
    kafka = msgspec.structs.replace(base.kafka, bootstrap_servers=bootstrap, topic_partitions=PARTITIONS,
                                    create_topics=True)
    topic = f"slices-{max_batch}-{round_}"
    await ensure_topics(kafka, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                linger_ms=base.kafka.producer_linger_ms, max_batch_size=max_batch)
    await producer.start()
    value = os.urandom(ROW_BYTES)
    seconds = []
    try:
        for index in range(SLICES):
            records = ((i % PARTITIONS, f"dev-{index}-{i}".encode(), value) for i in range(DEVICES))
            started = time.perf_counter()
            await asyncio.gather(*await send_records(producer, topic, records))
            seconds.append(time.perf_counter() - started)
    finally:
        await producer.stop()
    return seconds


def main() -> None:
    """Time each batch size twice, alternating; write the JSON (--json) and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    runs: dict[int, list[float]] = {size: [] for size in SIZES}
    with EmbeddedBroker() as broker:
        for round_ in range(2):
            for size in SIZES:
                runs[size] += asyncio.run(_time_size(broker.bootstrap_servers, size, round_))
    result: dict[str, Any] = {"benchmark": "snapshot_batches", **machine_record(), "slice_devices": DEVICES,
                              "row_bytes": ROW_BYTES, "partitions": PARTITIONS, "by_max_batch_bytes": {
                                  str(size): {"median_ms": round(1000 * sorted(s)[len(s) // 2], 1),
                                              "max_ms": round(1000 * max(s), 1), "slices": len(s)}
                                  for size, s in runs.items()}}
    if args.json is not None:
        write_json(args.json, result)
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
