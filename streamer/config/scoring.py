"""``readings``, ``buffers``, ``batching``, ``predictor``: what is read and how it is forecast."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from streamer.config.base import NonNegativeInt, PositiveFloat, PositiveInt, Section, UnitInterval


class ReadingsConfig(Section, frozen=True):
    """What a valid reading looks like."""

    # Channel names, in model input order. A reading with a scalar `value`
    # fills the single channel of a one-channel deployment.
    channels: list[str] = msgspec.field(default_factory=lambda: ["value"])
    # Devices whose id does not match are rejected as `unknown_device`.
    device_id_pattern: str = r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}"
    max_message_bytes: PositiveInt = 65_536
    # Event timestamps further ahead of the wall clock than this are rejected.
    max_future_ms: PositiveInt = 86_400_000

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("channels must name at least one channel")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels must be unique")
        try:
            re.compile(self.device_id_pattern)
        except re.error as exc:
            raise ValueError(f"device_id_pattern is not a valid regex: {exc}") from exc


class BuffersConfig(Section, frozen=True):
    """Per-device ring buffers held in one preallocated table."""

    window: Annotated[int, msgspec.Meta(ge=2, le=4096)] = 64
    initial_devices: PositiveInt = 1024
    # New devices beyond this many are rejected as `device_limit`, which
    # bounds memory under a flood of new ids.
    max_devices: PositiveInt = 1_000_000


class BatchingConfig(Section, frozen=True):
    """Micro-batching between fetch and scoring."""

    max_batch: PositiveInt = 4096
    # Once a fetch is in hand, wait this long for more before scoring. Under
    # load the queue fills while a batch is scored, so batches grow without
    # waiting; a long wait only adds latency (10 ms: p99 43 ms at 10K/s, 2 ms:
    # 33 ms, same drain rate; benchmarks/performance.md).
    max_wait_ms: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    # Fetched batches waiting to be scored; the fetch loop waits when it is full.
    queue_size: PositiveInt = 16
    # Backpressure in queued readings: every assigned partition is paused once
    # this many readings wait to be scored, and resumed at pause_low or fewer.
    # Unset: half the queue's capacity (queue_size * max_batch / 2) and half
    # of pause_high. Pausing (rather than blocking on a full queue) keeps the
    # consumer polling, so a slow scorer never exceeds max_poll_interval_ms.
    pause_high: PositiveInt | None = None
    pause_low: NonNegativeInt | None = None
    # Scored batches whose alerts and dead letters may await the broker's
    # acknowledgement while later batches are scored. Their offsets are marked
    # done in fetch order, each only once it and every earlier batch are
    # acknowledged, so commits never run ahead of delivery. 1: wait for a
    # batch's acknowledgements before scoring the next.
    max_unacked_batches: PositiveInt = 4

    def __post_init__(self) -> None:
        high, low = self.pause_marks()
        capacity = self.queue_size * self.max_batch
        if high > capacity:
            raise ValueError(f"pause_high must be at most queue_size * max_batch ({capacity}), got {high}")
        if low >= high:
            raise ValueError(f"pause_low must be below pause_high ({high}), got {low}")

    def pause_marks(self) -> tuple[int, int]:
        """The effective (high, low) backpressure marks in readings.

        >>> BatchingConfig(max_batch=100, queue_size=8).pause_marks()
        (400, 200)
        >>> BatchingConfig(max_batch=100, queue_size=8, pause_high=300).pause_marks()
        (300, 150)
        """
        half_queue = max(1, self.queue_size * self.max_batch // 2)
        high = self.pause_high if self.pause_high is not None else half_queue
        low = self.pause_low if self.pause_low is not None else high // 2
        return high, low


class BaselineConfig(Section, frozen=True):
    """Damped-trend Holt forecaster (exponential smoothing of level and trend)."""

    alpha: UnitInterval = 0.5
    beta: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    phi: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.9


class ShadowConfig(Section, frozen=True):
    """Scoring the registry's candidate beside the current model."""

    # Score `candidate` on the same batches (its alerts go to kafka.shadow_alert_topic).
    enabled: bool = True
    # Share of devices the candidate scores (by a hash of the device id): bounds its cost.
    fraction: UnitInterval = 1.0


class LSTMConfig(Section, frozen=True):
    """The trained LSTM forecaster."""

    # A bundle directory, or "default" for the bundle shipped with the package.
    bundle: str = "default"
    # A bundle registry directory (models.registry): the daemon runs its
    # `current`, swaps to a new `current` between two batches, and scores
    # `candidate` in shadow. Set, it replaces `bundle`.
    registry: str | None = None
    # How often the daemon reads the registry's pointers.
    poll_interval_s: PositiveFloat = 5.0
    shadow: ShadowConfig = msgspec.field(default_factory=ShadowConfig)
    # stateful: O(1) per reading (two staggered LSTM states per device);
    # window: the model over each device's last `window` readings.
    mode: Literal["stateful", "window"] = "stateful"
    # numpy needs no TensorFlow; tensorflow compiles with tf.function; keras
    # uses keras.ops under whichever Keras backend is configured (JAX/torch on GPUs).
    backend: Literal["numpy", "tensorflow", "keras"] = "numpy"


class PredictorConfig(Section, frozen=True):
    """Which forecaster scores readings."""

    kind: Literal["baseline", "lstm"] = "lstm"
    baseline: BaselineConfig = msgspec.field(default_factory=BaselineConfig)
    lstm: LSTMConfig = msgspec.field(default_factory=LSTMConfig)
