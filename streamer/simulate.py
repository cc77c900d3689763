"""A synthetic sensor fleet with injected anomalies and their ground truth.

Each device follows a seasonal signal (its own level, amplitude, period and
phase) plus Gaussian noise. Anomalies are scheduled ahead of time, so the
ground truth is known exactly:

- ``spike``: one reading far from normal;
- ``level_shift``: the level jumps and stays for the anomaly's duration;
- ``drift``: the level ramps away over the duration;
- ``flatline``: the sensor is stuck at its last value;
- ``noise_burst``: the noise grows several-fold.

Magnitudes are in units of the device's noise standard deviation.

A *drift* is not an anomaly: from step ``drift_at`` on, a share of the
devices settles at a new level (and, optionally, a new seasonal period) and
stays there, as after a firmware update or a replaced sensor. It is not in
the ground truth; anomalies injected after it are relative to the new normal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt

from streamer.codec import encode_reading
from streamer.kafka.publisher import Producer

log = logging.getLogger(__name__)

AnomalyKind = Literal["spike", "level_shift", "drift", "flatline", "noise_burst"]
ANOMALY_KINDS: tuple[AnomalyKind, ...] = ("spike", "level_shift", "drift", "flatline", "noise_burst")

# Size of each kind, in noise standard deviations, drawn uniformly in the range.
MAGNITUDE = {
    "spike": (8.0, 14.0),
    "level_shift": (7.0, 12.0),
    "drift": (10.0, 20.0),
    "flatline": (0.0, 0.0),
    "noise_burst": (5.0, 8.0),
}
# Duration of each kind, in readings.
DURATION = {"spike": (1, 1), "level_shift": (40, 80), "drift": (40, 80), "flatline": (40, 80),
            "noise_burst": (20, 40)}


class InjectedAnomaly(msgspec.Struct, frozen=True):
    """Ground truth of one injected anomaly (times are event times, epoch ms)."""

    device_id: str
    kind: str
    start_ts: int
    end_ts: int  # event time of the last affected reading
    magnitude: float


@dataclass(frozen=True)
class FleetSpec:
    """What to simulate."""

    devices: int = 200
    rate_hz: float = 10.0  # readings per second per device
    channels: Sequence[str] = ("value",)
    seed: int = 7
    device_prefix: str = "dev"
    # Anomalies start no earlier than this many readings into the run, so
    # detectors are past warm-up.
    quiet_readings: int = 80
    anomalies: int = 60
    kinds: Sequence[AnomalyKind] = ANOMALY_KINDS
    # The new normal (see the module docstring): from this step on (None: never)...
    drift_at: int | None = None
    # ...the level of the drifted devices moves by this many noise standard deviations...
    drift_level: float = 0.0
    # ...for this share of the devices (a seeded choice)...
    drift_share: float = 0.0
    # ...and their seasonal period becomes this many readings (None: unchanged).
    drift_period: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.drift_share <= 1.0:
            raise ValueError(f"drift_share must be in [0, 1], got {self.drift_share}")
        if self.drift_at is not None and self.drift_at < 0:
            raise ValueError(f"drift_at must be >= 0, got {self.drift_at}")
        if self.drift_period is not None and self.drift_period <= 0:
            raise ValueError(f"drift_period must be > 0, got {self.drift_period}")


@dataclass
class _Scheduled:
    device: int
    kind: AnomalyKind
    start_step: int
    steps: int
    magnitude: float
    sign: float
    stuck: npt.NDArray[np.float64] | None = None


@dataclass
class Fleet:
    """Generates the readings of every device, one time step at a time."""

    spec: FleetSpec
    total_steps: int
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        spec = self.spec
        self.rng = np.random.default_rng(spec.seed)
        d, c = spec.devices, len(spec.channels)
        rng = self.rng
        self.device_ids = [f"{spec.device_prefix}-{i:05d}" for i in range(d)]
        self.level = rng.uniform(-50, 150, (d, c))
        self.noise = rng.uniform(0.2, 2.0, (d, c))
        self.amplitude = self.noise * rng.uniform(0.0, 8.0, (d, c))
        self.period = rng.uniform(100, 600, (d, c))  # in readings
        self.phase = rng.uniform(0, 2 * np.pi, (d, c))
        self.schedule = self._plan()
        # A generator of its own: turning drift on leaves every other draw (levels,
        # schedule, noise) as it was for the seed, so runs with and without compare.
        drift_rng = np.random.default_rng([spec.seed, 1])
        count = round(spec.drift_share * d) if spec.drift_at is not None else 0
        self.drifted = np.zeros(d, dtype=bool)
        self.drifted[drift_rng.choice(d, size=count, replace=False)] = True
        self._by_step: dict[int, list[_Scheduled]] = {}
        for item in self.schedule:
            for step in range(item.start_step, item.start_step + item.steps):
                self._by_step.setdefault(step, []).append(item)

    def _plan(self) -> list[_Scheduled]:
        spec = self.spec
        rng = self.rng
        first = spec.quiet_readings
        # Leave room after the last anomaly for it to be detected.
        last = self.total_steps - 30
        if spec.anomalies == 0 or last <= first or not spec.kinds:
            return []
        plan: list[_Scheduled] = []
        busy_until = np.full(spec.devices, -1)
        for i in range(spec.anomalies):
            kind = spec.kinds[i % len(spec.kinds)]
            lo, hi = DURATION[kind]
            # Every anomaly ends inside the run, so its ground truth is what was sent.
            steps = min(int(rng.integers(lo, hi + 1)), last - first)
            start = int(rng.integers(first, last - steps + 1))
            device = int(rng.integers(0, spec.devices))
            # One anomaly at a time per device, with calm between, so each
            # detection is attributable.
            for _ in range(spec.devices):
                if busy_until[device] < start:
                    break
                device = (device + 1) % spec.devices
            else:
                continue
            busy_until[device] = start + steps + 60
            mlo, mhi = MAGNITUDE[kind]
            plan.append(_Scheduled(device, kind, start, steps, float(rng.uniform(mlo, mhi)),
                                   float(rng.choice([-1.0, 1.0]))))
        return plan

    def values(self, step: int) -> npt.NDArray[np.float64]:
        """Readings of every device at ``step``, shape ``(devices, channels)``."""
        t = float(step)
        period = self.period
        drifting = self.spec.drift_at is not None and step >= self.spec.drift_at and self.drifted.any()
        if drifting and self.spec.drift_period is not None:
            period = np.where(self.drifted[:, None], self.spec.drift_period, self.period)
        clean = self.level + self.amplitude * np.sin(2 * np.pi * t / period + self.phase)
        if drifting:
            clean = clean + np.where(self.drifted[:, None], self.spec.drift_level * self.noise, 0.0)
        values = clean + self.noise * self.rng.standard_normal(clean.shape)
        for item in self._by_step.get(step, ()):
            d = item.device
            size = item.magnitude * self.noise[d]
            offset = step - item.start_step
            if item.kind in ("spike", "level_shift"):
                values[d] = clean[d] + item.sign * size + self.noise[d] * self.rng.standard_normal(len(size))
            elif item.kind == "drift":
                values[d] = values[d] + item.sign * size * (offset + 1) / item.steps
            elif item.kind == "flatline":
                if item.stuck is None:
                    item.stuck = values[d].copy()
                values[d] = item.stuck
            elif item.kind == "noise_burst":
                values[d] = clean[d] + self.noise[d] * item.magnitude * self.rng.standard_normal(len(size))
        return values

    def truth(self, start_ms: int, interval_ms: float) -> list[InjectedAnomaly]:
        """Ground truth with event times, for a run whose step 0 is at ``start_ms``."""
        return [
            InjectedAnomaly(
                device_id=self.device_ids[item.device],
                kind=item.kind,
                start_ts=start_ms + round(item.start_step * interval_ms),
                end_ts=start_ms + round((item.start_step + item.steps - 1) * interval_ms),
                magnitude=round(item.magnitude, 3),
            )
            for item in self.schedule
        ]


def write_truth(path: Path, truth: Sequence[InjectedAnomaly]) -> None:
    """Write ground truth as JSON lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(msgspec.json.encode(item) + b"\n" for item in truth))


def read_truth(path: Path) -> list[InjectedAnomaly]:
    """Read ground truth written by :func:`write_truth`."""
    decoder = msgspec.json.Decoder(InjectedAnomaly)
    return [decoder.decode(line) for line in path.read_bytes().splitlines() if line.strip()]


@dataclass
class SimulationStats:
    """What a simulation run sent."""

    readings_sent: int = 0
    steps: int = 0
    started_ms: int = 0
    truth: list[InjectedAnomaly] = field(default_factory=list)


async def simulate(
    producer: Producer,
    topic: str,
    spec: FleetSpec,
    duration_s: float,
    *,
    stats: SimulationStats | None = None,
    stop: asyncio.Event | None = None,
) -> SimulationStats:
    """Produce the fleet's readings in real time for ``duration_s`` seconds.

    Event timestamps are the wall clock at each step, so event-to-alert
    latency measured downstream is real.

    Args:
        producer: A started aiokafka producer.
        topic: Input topic.
        spec: The fleet.
        duration_s: Run length.
        stats: Filled in as the run goes (readable while it runs).
        stop: Ends the run early when set.
    """
    stats = stats or SimulationStats()
    interval = 1.0 / spec.rate_hz
    total_steps = max(1, int(duration_s * spec.rate_hz))
    fleet = Fleet(spec, total_steps)
    start = time.time()
    stats.started_ms = int(start * 1000)
    stats.truth = fleet.truth(stats.started_ms, interval * 1000)
    keys = [device_id.encode() for device_id in fleet.device_ids]
    channels = list(spec.channels)
    single = len(channels) == 1
    for step in range(total_steps):
        if stop is not None and stop.is_set():
            break
        due = start + step * interval
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        ts_ms = stats.started_ms + round(step * interval * 1000)
        values = fleet.values(step)
        pending = []
        for d, device_id in enumerate(fleet.device_ids):
            row = values[d]
            value: float | dict[str, float] = (
                float(row[0]) if single else {name: float(v) for name, v in zip(channels, row, strict=True)}
            )
            pending.append(
                await producer.send(topic, value=encode_reading(device_id, ts_ms, value), key=keys[d])
            )
        await asyncio.gather(*pending)
        stats.readings_sent += len(pending)
        stats.steps = step + 1
    # Truth only for anomalies that started before the run ended.
    end_ms = stats.started_ms + round(stats.steps * interval * 1000)
    stats.truth = [item for item in stats.truth if item.start_ts < end_ms]
    log.info("simulation sent %d readings over %d steps", stats.readings_sent, stats.steps)
    return stats
