"""Throughput of the daemon's score and acknowledgement loops against a broker that acknowledges late.

The daemon's own score loop and commit protocol (``streamer.runtime``) run on pre-fetched,
pre-decoded batches (4,096 readings of a 1,000-device fleet each, the
shipped LSTM, default thresholds) with a publisher whose acknowledgement of
each batch arrives ``delay`` milliseconds after it is sent, as from a broker
a network hop away with every batch carrying alerts (an alert storm). For each
delay it times ``batching.max_unacked_batches`` = 1 (wait for each batch's
acknowledgements before scoring the next: the behaviour before the setting
existed) and the default 4, alternating, best of ``--repeats``. No Kafka:
what is measured is how much acknowledgement waiting the scoring hides.

Usage::

    python benchmarks/unacked_batches.py --json benchmarks/unacked-batches.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from aiokafka import TopicPartition

from streamer.codec import ReadingDecoder, encode_reading
from streamer.config import Config, load_config
from streamer.endpoints import Health
from streamer.lab.bench.fleet import WireRecord
from streamer.lab.bench.machine import machine_record
from streamer.metrics import Metrics
from streamer.runtime.batches import Fetched
from streamer.runtime.commits import CommitProtocol
from streamer.runtime.score_loop import ScoreLoop
from streamer.runtime.scorer import Scorer
from streamer.scoring.batcher import MicroBatcher
from streamer.scoring.pipeline import ScoringPipeline

TP = TopicPartition("readings", 0)
DEVICES = 1_000
BATCH = 4_096


class LatePublisher:
    """Acknowledges each batch ``delay_s`` after it is sent."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def send(self, alerts: object, dead_letters: object) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        loop.call_later(self.delay_s, future.set_result, [])
        return future


def batches(decoder: ReadingDecoder, count: int, start_step: int) -> list[Fetched]:
    """``count`` fetches of :data:`BATCH` readings, every device in turn, consecutive offsets."""
    rng = np.random.default_rng(start_step)
    out = []
    for index in range(count):
        base = (start_step + index) * BATCH
        records = []
        for i in range(BATCH):
            n = base + i
            device = f"dev-{n % DEVICES}"
            ts = 1_700_000_000_000 + (n // DEVICES) * 1000
            records.append(WireRecord(TP.topic, 0, n, device.encode(),
                                      encode_reading(device, ts, float(rng.normal(50.0, 5.0))), ts))
        out.append(Fetched(records, decoder.decode(records, time.time()), {TP: base + BATCH},
                           np.zeros(BATCH, dtype=np.int32)))
    return out


async def measure(config: Config, delay_ms: float, unacked: int, warm: int, timed: int) -> float:
    """Readings per second over ``timed`` batches after ``warm`` untimed ones."""
    batching = msgspec.structs.replace(config.batching, max_unacked_batches=unacked, max_wait_ms=0.0)
    config = msgspec.structs.replace(config, batching=batching)
    metrics = Metrics()
    readings = config.readings
    decoder = ReadingDecoder(readings.channels, device_id_pattern=readings.device_id_pattern,
                             max_message_bytes=readings.max_message_bytes, max_future_ms=readings.max_future_ms)
    batcher: MicroBatcher[Fetched] = MicroBatcher(max_batch=batching.max_batch, max_wait_ms=0.0,
                                                  queue_size=batching.queue_size)
    health = Health(stall_after_s=60.0, unreachable_after_s=60.0, commit_stall_after_s=60.0)
    commits = CommitProtocol(metrics, health, max_unacked_batches=unacked)
    commits.activate(TP, None)
    scorer = Scorer(inline=not config.runtime.scores_on_thread(config.predictor))
    loop_ = ScoreLoop(pipeline=ScoringPipeline(config), batcher=batcher, scorer=scorer, commits=commits,
                      sink=LatePublisher(delay_ms / 1000.0), decoder=decoder, metrics=metrics,
                      on_batch_taken=lambda: None)
    warm_batches = batches(decoder, warm, 0)
    timed_batches = batches(decoder, timed, warm)
    loops = [asyncio.create_task(loop_.run()), asyncio.create_task(loop_.acknowledge())]
    try:
        for fetched in warm_batches:
            await batcher.put(fetched)
        await _until_done(commits, warm * BATCH)
        started = time.perf_counter()
        for fetched in timed_batches:
            await batcher.put(fetched)
        await _until_done(commits, (warm + timed) * BATCH)
        elapsed = time.perf_counter() - started
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        scorer.shutdown()
    return timed * BATCH / elapsed


async def _until_done(commits: CommitProtocol, offset: int) -> None:
    while (commits.finished(TP) or 0) < offset:
        await asyncio.sleep(0.0005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delays-ms", type=float, nargs="+", default=[0.0, 2.0, 5.0, 20.0])
    parser.add_argument("--batches", type=int, default=40, help="timed batches per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    config = load_config(None, environ={})
    results = []
    for delay in args.delays_ms:
        best: dict[int, float] = {}
        for _ in range(args.repeats):
            for unacked in (1, 4):
                rate = asyncio.run(measure(config, delay, unacked, warm=10, timed=args.batches))
                best[unacked] = max(best.get(unacked, 0.0), rate)
        results.append({"ack_delay_ms": delay, "readings_per_s_unacked_1": round(best[1]),
                        "readings_per_s_unacked_4": round(best[4]), "ratio": round(best[4] / best[1], 3)})
        print(results[-1], flush=True)  # noqa: T201  # a benchmark script's progress
    args.json.write_text(json.dumps({"benchmark": "unacked_batches", **machine_record(),
                                     "devices": DEVICES, "batch": BATCH, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
