"""Training readings for the forecaster that come from the streamer side.

``models`` trains on plain arrays and knows nothing of the simulator or of
Kafka. This module produces those arrays from the synthetic fleet (the
shipped default bundle is trained on it) or from an input topic replayed
from its beginning, decoded by the daemon's own decoder.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from models.data import TrainingData, from_rows
from streamer.codec import ReadingDecoder
from streamer.config import Config
from streamer.errors import BrokerError
from streamer.kafka.clients import connection_kwargs
from streamer.simulate import Fleet, FleetSpec

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

# A replay ends once a fetch comes back empty and every partition is at its
# end offset, or when no record arrives for this long although the broker
# reports more (e.g. records removed by retention while reading).
REPLAY_IDLE_TIMEOUT_S = 10.0
FETCH_TIMEOUT_MS = 500


def synthetic_series(
    devices: int, steps: int, *, seed: int = 7, channels: Sequence[str] = ("value",)
) -> dict[str, FloatArray]:
    """Anomaly-free readings of the synthetic fleet, ``(steps, channels)`` per device.

    The fleet's normal behaviour (seasonal signal plus noise, each device at
    its own scale) is what the forecaster must learn; anomalies are left out
    so it does not learn to predict them.

    >>> series = synthetic_series(3, 5, seed=1)
    >>> sorted(series), series["dev-00000"].shape
    (['dev-00000', 'dev-00001', 'dev-00002'], (5, 1))
    """
    fleet = Fleet(FleetSpec(devices=devices, channels=tuple(channels), seed=seed, anomalies=0), steps)
    values = np.stack([fleet.values(step) for step in range(steps)], axis=1)  # (devices, steps, channels)
    return {device: np.ascontiguousarray(values[i]) for i, device in enumerate(fleet.device_ids)}


async def topic_readings(
    config: Config,
    topic: str,
    *,
    max_records: int | None = None,
    idle_timeout_s: float = REPLAY_IDLE_TIMEOUT_S,
) -> TrainingData:
    """Replay ``topic`` from its beginning until caught up, grouped by device.

    Readings are decoded and validated exactly as the daemon does
    (``readings.*`` settings); rejected records are counted in the log and
    left out. No consumer group is used, so no offsets are committed.

    Args:
        config: Cluster address and security (``kafka.*``) and the reading format.
        topic: Topic to replay.
        max_records: Stop after this many records (default: the whole topic).
        idle_timeout_s: Give up waiting for more records after this long.

    Raises:
        BrokerError: The cluster is unreachable or the topic does not exist.
        ValueError: The topic holds no valid readings.
    """
    readings = config.readings
    decoder = ReadingDecoder(readings.channels, device_id_pattern=readings.device_id_pattern,
                             max_message_bytes=readings.max_message_bytes,
                             max_future_ms=readings.max_future_ms)
    consumer = AIOKafkaConsumer(enable_auto_commit=False, auto_offset_reset="earliest",
                                **connection_kwargs(config.kafka))
    devices: list[str] = []
    ts_parts: list[npt.NDArray[np.int64]] = []
    value_parts: list[FloatArray] = []
    rejected: Counter[str] = Counter()
    seen = 0
    try:
        await consumer.start()
        if topic not in await consumer.topics():
            raise BrokerError(f"topic {topic!r} does not exist")
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        idle_since = time.monotonic()
        while max_records is None or seen < max_records:
            fetched = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS)
            if not any(fetched.values()):
                # Caught up? End offsets are asked only now, once nothing more
                # arrives: some brokers report them late.
                ends = await consumer.end_offsets(partitions)
                if all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
                    break
                if time.monotonic() - idle_since > idle_timeout_s:
                    log.warning("no record for %.0f s before the end of %s; training on what arrived",
                                idle_timeout_s, topic)
                    break
                continue
            idle_since = time.monotonic()
            for records in fetched.values():
                if max_records is not None:
                    records = records[: max_records - seen]
                seen += len(records)
                decoded = decoder.decode(records)
                rejected.update(rejection.reason for rejection in decoded.rejections)
                batch = decoded.readings
                devices.extend(batch.device_ids)
                ts_parts.append(batch.ts_ms)
                value_parts.append(batch.values)
    except KafkaError as exc:
        raise BrokerError(f"replaying {topic!r}: {exc}") from exc
    finally:
        await consumer.stop()
    if rejected:
        log.warning("left out %d rejected record(s) of %s: %s", sum(rejected.values()), topic,
                    ", ".join(f"{reason} {count}" for reason, count in sorted(rejected.items())))
    channels = len(readings.channels)
    ts = np.concatenate(ts_parts) if ts_parts else np.zeros(0, np.int64)
    values = np.concatenate(value_parts) if value_parts else np.zeros((0, channels))
    log.info("replayed %d record(s) of %s: %d reading(s)", seen, topic, len(ts))
    return from_rows(devices, ts, values, readings.channels, source=f"topic {topic}")
