"""Time the jobs that touch every device, at fleet scale, as the daemon runs them (issue 17).

    python benchmarks/fleet/fleet_jobs.py --devices 100000 1000000 --json benchmarks/fleet/fleet-jobs.json

Per fleet size, with the default config (stateful LSTM, numpy): every device
registered and changed, then each job timed as one call (what the daemon did
before) and, where it is now sliced, per slice of ``state.slice_devices``:
what one slice holds the scorer for is the scoring pause it causes. No
broker: snapshots go to an in-memory producer (the encoding and batching
are timed, the network is not).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from models.backends import NumpyBackend
from streamer.codec import ReadingDecoder, Record, encode_reading
from streamer.config import load_config
from streamer.json_output import write_json
from streamer.lab.bench.machine import machine_record
from streamer.metrics import Metrics
from streamer.scoring.pipeline import ScoringPipeline
from streamer.state.manager import SCAN_ROWS, StateManager, release_partitions
from streamer.state.snapshots import decode_snapshot

T = TypeVar("T")
PARTITIONS = 6
BATCH = 4096  # batching.max_batch
START_MS = 1_700_000_000_000


@dataclass(frozen=True)
class _Record:
    value: bytes
    key: bytes
    partition: int
    offset: int
    topic: str = "readings"
    timestamp: int = START_MS


class _Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, *, timestamp: int | None, key: bytes | None, value: bytes | None) -> object:
        self.records.append((key, value))
        return self


class _Producer:
    """Takes record batches and acknowledges them at once."""

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))


async def _inline(fn: Callable[[], T], job: str) -> T:
    return fn()


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def _slices(fn: Callable[[np.ndarray], object], slots: np.ndarray, size: int) -> dict[str, float]:
    seconds = [_timed(functools.partial(fn, slots[i:i + size]))[1] for i in range(0, len(slots), size)]
    return {"slices": len(seconds), "slice_ms_p50": round(1000 * float(np.median(seconds)), 2),
            "slice_ms_max": round(1000 * max(seconds), 2), "total_s": round(sum(seconds), 3)}


def measure(devices: int) -> dict[str, Any]:
    """Every job's time at ``devices`` devices (see the module docstring)."""
    config = load_config(None, environ={})
    size = config.state.slice_devices
    pipeline = ScoringPipeline(config)
    state = StateManager(pipeline, config, producer=_Producer(), run=_inline, metrics=Metrics())
    registry = pipeline.registry
    ids = [f"dev-{i:07d}" for i in range(devices)]
    partitions = (np.arange(devices) % PARTITIONS).astype(np.int32)
    record: dict[str, Any] = {"devices": devices, "slice_devices": size, "row_bytes": state.schema.row_bytes}
    # Growth as the scoring path meets it: the fleet's first readings scored a batch at a time.
    readings = config.readings
    decoder = ReadingDecoder(readings.channels, device_id_pattern=readings.device_id_pattern,
                             max_message_bytes=readings.max_message_bytes,
                             max_future_ms=readings.max_future_ms)
    batches: list[float] = []
    for start in range(0, devices, BATCH):
        records = [_Record(encode_reading(ids[i], START_MS, 1.0), ids[i].encode(), int(partitions[i]), i)
                   for i in range(start, min(devices, start + BATCH))]
        batch = decoder.decode(cast(list[Record], records)).readings
        where = np.array([r.partition for r in records], np.int32)[batch.record_index]
        # Before the last but one batch (the last may reach buffers.max_devices, past which the
        # table doubles): one growth step alone, at about this size.
        if start + BATCH < devices <= start + 2 * BATCH:
            rows = registry.table.capacity + 1
            step = _timed(functools.partial(registry.table.grow, rows))[1]
            record["growth_step_table_ms"] = round(1000 * step, 2)
            backend = pipeline.extra_rows()
            if isinstance(backend, NumpyBackend):
                step = _timed(functools.partial(backend.ensure_rows, rows))[1]
                record["growth_step_lstm_ms"] = round(1000 * step, 2)
        started = time.perf_counter()
        pipeline.score(batch, where)
        batches.append(time.perf_counter() - started)
    # A batch of new devices: admission and first readings; most also grow the table a step.
    record["new_devices_batch_ms"] = {"p50": round(1000 * float(np.median(batches)), 2),
                                      "max": round(1000 * max(batches), 2), "batches": len(batches)}
    record["table_mib"] = round(registry.table.nbytes() / 2**20, 1)
    table = registry.table
    table["seen"][:devices] = 50  # every device changed since its last snapshot
    positions = dict.fromkeys(range(PARTITIONS), 100)
    record["gauges_ms"] = round(1000 * _timed(lambda: (registry.warming_up(pipeline.warmup),
                                                       pipeline.episodes.open_count()))[1], 2)
    scans = [_timed(functools.partial(registry.changed_slots, range(PARTITIONS), start, start + SCAN_ROWS))
             for start in range(0, registry.high_water, SCAN_ROWS)]
    changed = np.concatenate([slots for slots, _ in scans])
    at_once = _timed(lambda: registry.changed_slots(range(PARTITIONS)))[1]
    record["changed_scan_at_once_ms"] = round(1000 * at_once, 2)
    record["changed_scan_slice_ms_max"] = round(1000 * max(seconds for _, seconds in scans), 2)
    record["snapshot_take_all_at_once_s"] = round(_timed(lambda: state.take(positions))[1], 3)
    record["snapshot_take"] = _slices(lambda part: state.take(positions, part), changed, size)
    taken = state.take(positions, changed[:size])
    record["snapshot_write_slice_ms"] = round(1000 * _timed(lambda: asyncio.run(state.write(taken)))[1], 2)
    chosen = {device_id: snapshot for device_id, value in zip(taken.device_ids, taken.values, strict=True)
              if (snapshot := decode_snapshot(value)) is not None}
    slots = registry.slots_of_partitions([0])
    record["release_partition_at_once_s"] = round(_timed(lambda: release_partitions(registry, [0]))[1], 3)
    registry.resolve([ids[i] for i in range(0, devices, PARTITIONS)],
                     np.zeros(len(slots), np.int32))  # partition 0 back
    record["release_partition"] = _slices(registry.release, registry.slots_of_partitions([0]), size)
    _, seconds = _timed(lambda: state.apply(0, chosen))
    record["restore_apply_slice_ms"] = round(1000 * seconds, 2)
    return record


def main() -> int:
    """Measure each fleet size; print the JSON (and write it with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    records = [measure(devices) for devices in args.devices]
    result = {"benchmark": "fleet_jobs", **machine_record(), "records": records}
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
