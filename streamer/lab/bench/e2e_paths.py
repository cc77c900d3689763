"""The reference paths of ``streamer bench e2e`` and its alert subscriber, each in its own interpreter.

``python -m streamer.lab.bench.e2e_paths raw --config C --expect N --out F``
    The upper bound for one consumer process: aiokafka consuming the input
    topic in a consumer group with the daemon's own consumer settings and
    decoding every fetch with the daemon's decoder, and nothing else.

``python -m streamer.lab.bench.e2e_paths naive --config C --seconds S --max-readings M --out F``
    What a tutorial's real-time predictor does: iterate over the consumer
    record by record, ``json.loads`` each value, keep a ring buffer
    (``deque(maxlen=window)``) per device, and once it is full call the Keras
    model's ``predict()`` on that one window for every reading, then judge the
    residual with a running z-score. Timed from the first ``predict()`` (the
    windows filling up and the model's first traced calls are not timed)
    for ``S`` seconds or ``M`` readings, whichever comes first.

``python -m streamer.lab.bench.e2e_paths alerts --config C --out F``
    Reads the alert topic (and a sample of one input partition) and appends
    a line per alert to ``F`` until SIGTERM (see :func:`alert_subscriber`);
    its first line, ``# ready``, says it is reading.

Each writes a JSON object to ``--out`` (the alert subscriber: its lines).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.codec import ReadingDecoder, WireReading, decode_alert
from streamer.config import Config, load_config
from streamer.gc_tuning import tuned_collector
from streamer.kafka.clients import connection_kwargs
from streamer.lab.bench.machine import keras_backend, process_cpu_seconds

# The naive path's z-score: as the daemon's default threshold.
NAIVE_Z = 5.0
# Untimed predict() calls before timing: Keras traces its predict function on the first.
NAIVE_WARMUP_CALLS = 3
# The subscriber asks the broker to answer quickly when there is nothing to
# fetch, so an alert waits little for the next fetch.
SUBSCRIBER_FETCH_WAIT_MS = 5
# The subscriber times one reading in this many of input partition 0.
READING_SAMPLE_EVERY = 10


async def raw_path(config: Config, expect: int, timeout_s: float) -> dict[str, Any]:
    """Consume and decode until ``expect`` records have been read; samples of ``(time, count)``."""
    kafka = config.kafka
    readings = config.readings
    decoder = ReadingDecoder(readings.channels, device_id_pattern=readings.device_id_pattern,
                             max_message_bytes=readings.max_message_bytes,
                             max_future_ms=readings.max_future_ms)
    max_records = config.batching.max_batch
    # The daemon's consumer settings (streamer.kafka.clients.make_consumer), with
    # aiokafka resetting positions itself: a fresh group starts at the beginning.
    consumer = AIOKafkaConsumer(
        kafka.input_topic, group_id=kafka.group_id, enable_auto_commit=False,
        auto_offset_reset=kafka.auto_offset_reset,
        max_poll_records=min(kafka.max_poll_records, max_records),
        fetch_max_wait_ms=kafka.fetch_max_wait_ms, session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms, max_poll_interval_ms=kafka.max_poll_interval_ms,
        **connection_kwargs(kafka))
    await consumer.start()
    samples: list[tuple[float, int]] = []
    count = rejected = 0
    cpu_first: float | None = None
    deadline = time.monotonic() + timeout_s
    # The daemon's garbage-collector settings too (runtime.gc_gen0_threshold):
    # the upper bound must not be slowed by what the daemon tunes away.
    with tuned_collector(config.runtime.gc_gen0_threshold):
        try:
            while count < expect and time.monotonic() < deadline:
                fetched = await consumer.getmany(timeout_ms=100, max_records=max_records)
                records = [r for batch in fetched.values() for r in batch]
                if not records:
                    continue
                if cpu_first is None:
                    cpu_first = process_cpu_seconds(os.getpid())
                decoded = decoder.decode(records, time.time())
                rejected += len(decoded.rejections)
                count += len(records)
                samples.append((time.monotonic(), count))
        finally:
            await consumer.stop()
    cpu_last = process_cpu_seconds(os.getpid())
    seconds = samples[-1][0] - samples[0][0] if len(samples) > 1 else 0.0
    return {"readings": count, "rejected": rejected, "samples": samples,
            "cpu_percent": (round(100.0 * (cpu_last - cpu_first) / seconds, 1)
                            if cpu_first is not None and cpu_last is not None and seconds > 0 else None)}


class _RunningZ:
    """Welford mean and variance of one device's residuals (the tutorial's threshold)."""

    __slots__ = ("count", "m2", "mean")

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def anomalous(self, residual: float) -> bool:
        std = math.sqrt(self.m2 / self.count) if self.count > 1 else 0.0
        flagged = std > 0 and abs(residual - self.mean) / std >= NAIVE_Z
        if not flagged:
            self.count += 1
            delta = residual - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (residual - self.mean)
        return flagged


async def naive_path(config: Config, seconds: float, max_readings: int, timeout_s: float,
                     expect: int | None = None) -> dict[str, Any]:
    """The tutorial predictor: one Keras ``predict()`` per reading; see the module docstring.

    ``expect``: the backlog's size; the path ends once it has read that many
    records (a backlog shorter than a window per device gives it nothing to time).
    """
    from models.bundle import load_bundle

    bundle = load_bundle(config.predictor.lstm.bundle)
    model = bundle.keras_model()
    window = bundle.metadata.window
    channels = list(config.readings.channels)
    width = len(channels)
    for _ in range(NAIVE_WARMUP_CALLS):
        model.predict(np.zeros((1, window, width), dtype=np.float32), verbose=0)

    kafka = config.kafka
    consumer = AIOKafkaConsumer(kafka.input_topic, group_id=kafka.group_id, auto_offset_reset="earliest",
                                enable_auto_commit=False, session_timeout_ms=kafka.session_timeout_ms,
                                heartbeat_interval_ms=kafka.heartbeat_interval_ms, **connection_kwargs(kafka))
    await consumer.start()
    buffers: dict[str, deque[list[float]]] = {}
    thresholds: dict[str, _RunningZ] = {}
    filled = predicted = flagged = 0  # filled: readings of devices whose window was not yet full
    read = 0
    started: float | None = None
    elapsed = 0.0
    deadline = time.monotonic() + timeout_s
    try:
        async for message in consumer:
            read += 1
            reading = json.loads(message.value)
            device = reading["device_id"]
            vector = [float(reading["value"])] if "value" in reading else [
                float(reading["values"][name]) for name in channels]
            buffer = buffers.get(device)
            if buffer is None:
                buffer = buffers[device] = deque(maxlen=window)
                thresholds[device] = _RunningZ()
            if len(buffer) == window:
                if started is None:
                    started = time.perf_counter()
                history = np.asarray(buffer, dtype=np.float32)
                mean, std = history.mean(axis=0), history.std(axis=0) + 1e-6
                scaled = ((history - mean) / std)[None, :, :]
                output = model.predict(scaled, verbose=0)
                forecast = mean + std * np.asarray(output)[0, -1, :]
                residual = float(np.max(np.abs(np.asarray(vector) - forecast)))
                flagged += thresholds[device].anomalous(residual)
                predicted += 1
            else:
                filled += 1
            buffer.append(vector)
            if started is not None:
                elapsed = time.perf_counter() - started
                if elapsed >= seconds or predicted >= max_readings:
                    break
            if time.monotonic() > deadline or (expect is not None and read >= expect):
                break
    finally:
        await consumer.stop()
    skipped = ({"skipped": f"no device had a full window of {window} readings in the backlog"}
               if not predicted else {})
    return {
        **skipped,
        "readings_per_s": round(predicted / elapsed, 2) if elapsed > 0 else None,
        "predict_calls": predicted,
        "seconds": round(elapsed, 3),
        "ms_per_reading": round(1000.0 * elapsed / predicted, 2) if predicted else None,
        "flagged": flagged,
        "readings_without_predict": filled,
        "records_read": read,
        "window": window,
        "keras_backend": keras_backend(),
    }


async def alert_subscriber(config: Config, out: Path) -> None:
    """Record alerts, and a sample of input readings, with their arrival times, until SIGTERM.

    Lines: ``A event_ts_ms received_ms event`` per alert, and ``R event_ts_ms
    received_ms`` for every :data:`READING_SAMPLE_EVERY`-th reading of input
    partition 0: how long a reading takes to reach *a* consumer at all
    (producer, broker, fetch), the floor under the daemon's latency, measured
    at the same time. One partition only, so the subscriber takes little of
    the machine from the daemon.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    kafka = config.kafka
    consumer = AIOKafkaConsumer(group_id=None, auto_offset_reset="earliest",
                                fetch_max_wait_ms=SUBSCRIBER_FETCH_WAIT_MS, **connection_kwargs(kafka))
    await consumer.start()
    reading = msgspec.json.Decoder(WireReading)
    try:
        alert_partitions = await _partitions(consumer, kafka.alert_topic)
        sampled = TopicPartition(kafka.input_topic, 0)
        consumer.assign([*alert_partitions, sampled])
        await consumer.seek_to_end(sampled)
        await consumer.position(sampled)  # resolved now: only readings sent from here on count
        with out.open("a", encoding="utf-8") as sink:
            sink.write("# ready\n")
            sink.flush()
            seen = 0
            while not stop.is_set():
                fetched = await consumer.getmany(timeout_ms=100)
                received_ms = time.time() * 1000.0
                lines = []
                for tp, batch in fetched.items():
                    for record in batch:
                        if tp == sampled:
                            seen += 1
                            if seen % READING_SAMPLE_EVERY == 0:
                                lines.append(f"R {reading.decode(record.value).ts} {received_ms:.3f}\n")
                        else:
                            alert = decode_alert(record.value)
                            lines.append(f"A {alert.ts} {received_ms:.3f} {alert.event}\n")
                if lines:
                    sink.writelines(lines)
                    sink.flush()
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return [TopicPartition(topic, p) for p in sorted(partitions)]
        await consumer.topics()  # refreshes the metadata
        await asyncio.sleep(0.2)
    raise RuntimeError(f"topic {topic} has no partitions in the metadata")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one path and write its result."""
    parser = argparse.ArgumentParser(prog="python -m streamer.lab.bench.e2e_paths")
    parser.add_argument("path", choices=["raw", "naive", "alerts"])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--expect", type=int, default=0,
                        help="raw: records to read; naive: end once this many are read (0: no end)")
    parser.add_argument("--seconds", type=float, default=20.0, help="naive: time at most this long")
    parser.add_argument("--max-readings", type=int, default=300, help="naive: at most this many readings")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.path == "alerts":
        asyncio.run(alert_subscriber(config, args.out))
        return 0
    if args.path == "raw":
        result = asyncio.run(raw_path(config, args.expect, args.timeout))
    else:
        result = asyncio.run(naive_path(config, args.seconds, args.max_readings, args.timeout,
                                        expect=args.expect or None))
    args.out.write_text(json.dumps(result) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
