"""Synthetic readings for the benchmarks: device ids, signals, wire records.

The benchmarks need readings fast and in bulk, with per-device event times
that only move forward, so they generate them here with numpy rather than
through :mod:`streamer.simulate` (which produces one time step of the whole
fleet at a time, with a scheduled ground truth the benchmarks do not need).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamer.codec import encode_reading

IntArray = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]

# Wide enough for a million devices, and valid under the default device_id_pattern.
ID_DIGITS = 7


def device_id(index: int) -> str:
    """The id of device ``index`` in every benchmark fleet.

    >>> device_id(42)
    'dev-0000042'
    """
    return f"dev-{index:0{ID_DIGITS}d}"


def partition_of(devices: IntArray, partitions: int) -> IntArray:
    """The input partition of each device: a fixed map, so each device's readings stay in order.

    >>> partition_of(np.array([0, 1, 5, 6]), 3).tolist()
    [0, 1, 2, 0]
    """
    result: IntArray = devices % partitions
    return result


@dataclass(slots=True)
class WireRecord:
    """The fields of a Kafka record the decoder reads (aiokafka's ConsumerRecord has them too)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


def encode_readings(devices: IntArray, ts_ms: IntArray, values: Float64Array,
                    channels: Sequence[str]) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` wire bytes of one reading per row.

    Args:
        devices: Device index per reading.
        ts_ms: Event time per reading, epoch ms.
        values: ``(n, channels)`` readings.
        channels: Channel names; one channel is sent as ``value``, more as ``values``.

    >>> encode_readings(np.array([3]), np.array([5]), np.array([[1.5]]), ["value"])
    [(b'dev-0000003', b'{"device_id":"dev-0000003","ts":5,"value":1.5}')]
    """
    names = list(channels)
    out: list[tuple[bytes, bytes]] = []
    if len(names) != 1:
        for index, ts, row in zip(devices.tolist(), ts_ms.tolist(), values.tolist(), strict=True):
            ident = device_id(index)
            out.append((ident.encode(), encode_reading(ident, ts, dict(zip(names, row, strict=True)))))
        return out
    # One channel: formatted directly, several times faster than a dict through
    # the JSON encoder (the e2e producer's budget). repr() of a finite float is
    # valid JSON and round-trips exactly.
    for index, ts, value in zip(devices.tolist(), ts_ms.tolist(), values[:, 0].tolist(), strict=True):
        key = device_id(index).encode()
        out.append((key, b'{"device_id":"%s","ts":%d,"value":%s}' % (key, ts, repr(value).encode())))
    return out


class SignalFleet:
    """Per-device seasonal signals with noise and, optionally, spikes.

    Reading ``step`` of device ``d`` is ``level + amplitude * sin(2π step /
    period + phase) + noise * N(0, 1)``; with probability
    ``spike_probability`` it is pushed ``spike_sigmas`` noise deviations up
    or down instead (so that the e2e benchmark has alerts to time).

    >>> fleet = SignalFleet(4, channels=1, seed=1)
    >>> fleet.values(np.array([0, 1, 2, 3]), np.array([0, 0, 0, 0])).shape
    (4, 1)
    """

    def __init__(self, devices: int, *, channels: int, seed: int = 0, spike_probability: float = 0.0,
                 spike_sigmas: float = 20.0) -> None:
        rng = np.random.default_rng(seed)
        shape = (devices, channels)
        self.devices = devices
        self.channels = channels
        self.level = rng.uniform(-50.0, 150.0, shape)
        self.noise = rng.uniform(0.2, 2.0, shape)
        self.amplitude = self.noise * rng.uniform(0.0, 8.0, shape)
        self.period = rng.uniform(100.0, 600.0, shape)  # in readings
        self.phase = rng.uniform(0.0, 2.0 * np.pi, shape)
        self.spike_probability = spike_probability
        self.spike_sigmas = spike_sigmas
        self._rng = rng

    def values(self, devices: IntArray, steps: IntArray) -> Float64Array:
        """Readings ``(n, channels)`` of ``devices`` at their ``steps``."""
        t = steps.astype(np.float64)[:, None]
        clean = self.level[devices] + self.amplitude[devices] * np.sin(
            2.0 * np.pi * t / self.period[devices] + self.phase[devices])
        noise = self.noise[devices]
        values: Float64Array = clean + noise * self._rng.standard_normal(clean.shape)
        if self.spike_probability > 0.0:
            spiked = self._rng.random(len(devices)) < self.spike_probability
            if spiked.any():
                sign = self._rng.choice(np.array([-1.0, 1.0]), size=int(spiked.sum()))[:, None]
                values[spiked] = clean[spiked] + sign * self.spike_sigmas * noise[spiked]
        return values
