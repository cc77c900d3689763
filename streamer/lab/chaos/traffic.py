"""The chaos producer: a deterministic fleet with known anomalies and known hostile records.

Readings come from :class:`streamer.simulate.Fleet` (seeded), but event times
are fixed (``BASE_TS_MS`` plus the step times the interval), not the wall
clock: the same plan always produces the same bytes, so a fault-free
reference run over the same input is comparable alert by alert.

Every ``hostile_every`` steps one hostile record follows a device's reading,
keyed by that device (so it lands in the device's partition, between its
readings). Each kind names the reason the daemon must reject it for; two are
stateful (``duplicate_timestamp``, ``out_of_order``) and so also check that
restored device state remembers the last event time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamer.codec import encode_reading
from streamer.lab.chaos.plan import ChaosPlan
from streamer.lab.chaos.verdict import ProducedRecord
from streamer.simulate import Fleet, FleetSpec, InjectedAnomaly

log = logging.getLogger(__name__)

# 2023-11-14T22:13:20Z: in the past, so no event time is ever "in the future".
BASE_TS_MS = 1_700_000_000_000
# Hostile kinds in the order they are produced; each is the rejection reason expected.
HOSTILE_KINDS: tuple[str, ...] = (
    "malformed_json", "empty", "missing_field", "wrong_type", "non_finite", "invalid_timestamp",
    "invalid_device_id", "key_mismatch", "duplicate_timestamp", "oversized", "out_of_order",
)
# Bigger than the daemon's default readings.max_message_bytes (64 KiB).
OVERSIZED_PAD = 70_000


@dataclass(frozen=True)
class Outgoing:
    """One record to produce."""

    key: bytes
    value: bytes | None
    hostile: str | None = None


def hostile_record(kind: str, device_id: str, other_device: str, ts_ms: int, interval_ms: int,
                   row: npt.NDArray[np.float64], channels: Sequence[str]) -> Outgoing:
    """A record keyed by ``device_id`` that the daemon must reject with reason ``kind``.

    ``ts_ms`` is the event time of the device's reading just produced.

    >>> hostile_record("wrong_type", "d-1", "d-2", 5000, 200, np.array([1.0]), ["value"]).value
    b'{"device_id": "d-1", "ts": 5000, "value": "high"}'
    """
    key = device_id.encode()
    single = len(channels) == 1
    good: dict[str, Any] = {"device_id": device_id, "ts": ts_ms}
    if single:
        good["value"] = float(row[0])
    else:
        good["values"] = {name: float(v) for name, v in zip(channels, row, strict=True)}
    value_field = "value" if single else "values"
    payload: dict[str, Any]
    if kind == "malformed_json":
        return Outgoing(key, json.dumps(good).encode()[:-7], kind)
    if kind == "empty":
        return Outgoing(key, None, kind)
    if kind == "missing_field":
        payload = {"device_id": device_id, "ts": ts_ms}
    elif kind == "wrong_type":
        payload = {**good, value_field: "high"}
    elif kind == "non_finite":
        payload = {**good, value_field: float("nan") if single else dict.fromkeys(channels, float("inf"))}
    elif kind == "invalid_timestamp":
        payload = {**good, "ts": -1}
    elif kind == "invalid_device_id":
        payload = {**good, "device_id": f"bad id/{device_id}!"}
    elif kind == "key_mismatch":
        payload = {**good, "device_id": other_device}
    elif kind == "duplicate_timestamp":
        payload = good
    elif kind == "oversized":
        payload = {**good, "pad": "x" * OVERSIZED_PAD}
    elif kind == "out_of_order":
        payload = {**good, "ts": ts_ms - 3 * interval_ms}
    else:
        raise ValueError(f"unknown hostile kind {kind!r}")
    return Outgoing(key, json.dumps(payload).encode(), kind)


class Traffic:
    """The records of a plan, step by step, and the anomalies injected into them."""

    def __init__(self, plan: ChaosPlan, channels: Sequence[str]) -> None:
        self.plan = plan
        self.channels = list(channels)
        self.steps = max(1, int(plan.duration_s * plan.rate_hz))
        self.interval_ms = round(1000.0 / plan.rate_hz)
        self.fleet = Fleet(FleetSpec(devices=plan.devices, rate_hz=plan.rate_hz, channels=tuple(channels),
                                     seed=plan.seed, anomalies=plan.anomalies), self.steps)
        self.truth: list[InjectedAnomaly] = self.fleet.truth(BASE_TS_MS, self.interval_ms)
        self._keys = [device_id.encode() for device_id in self.fleet.device_ids]

    def step(self, step: int) -> list[Outgoing]:
        """Every device's reading at ``step``, then possibly one hostile record.

        Call with ``step`` = 0, 1, 2, ... in order: the fleet's noise is drawn sequentially.
        """
        ts_ms = BASE_TS_MS + step * self.interval_ms
        values = self.fleet.values(step)
        ids = self.fleet.device_ids
        single = len(self.channels) == 1
        out = [
            Outgoing(self._keys[d], encode_reading(
                device_id, ts_ms,
                float(values[d, 0]) if single
                else dict(zip(self.channels, map(float, values[d]), strict=True))))
            for d, device_id in enumerate(ids)
        ]
        every = self.plan.hostile_every
        # Not at step 0: the stateful kinds need an accepted reading before them.
        if every > 0 and step > 0 and step % every == 0:
            number = step // every - 1
            kind = HOSTILE_KINDS[number % len(HOSTILE_KINDS)]
            d = number % len(ids)
            out.append(hostile_record(kind, ids[d], ids[(d + 1) % len(ids)], ts_ms, self.interval_ms,
                                      values[d], self.channels))
        return out


@dataclass
class Production:
    """What the producer wrote so far (readable while it runs)."""

    records: list[ProducedRecord] = field(default_factory=list)
    step_starts: list[int] = field(default_factory=list)  # index in records of each step's first record
    steps: int = 0
    late_steps: int = 0  # steps sent behind schedule (the broker was paused, or the machine busy)


async def produce(producer: Any, topic: str, traffic: Traffic, production: Production) -> Production:
    """Produce every step of ``traffic`` in real time; record each acknowledged position.

    Steps are paced at the plan's rate; after a broker outage the backlog is
    sent at once (like real devices with a local buffer).
    """
    interval_s = traffic.interval_ms / 1000.0
    start = time.monotonic()
    for step in range(traffic.steps):
        delay = start + step * interval_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -interval_s:
            production.late_steps += 1
        outgoing = traffic.step(step)
        futures = [await producer.send(topic, value=item.value, key=item.key) for item in outgoing]
        production.step_starts.append(len(production.records))
        for item, metadata in zip(outgoing, await asyncio.gather(*futures), strict=True):
            production.records.append(ProducedRecord(metadata.partition, metadata.offset, item.hostile))
        production.steps = step + 1
    log.info("produced %d records (%d steps, %d behind schedule)", len(production.records),
             production.steps, production.late_steps)
    return production
