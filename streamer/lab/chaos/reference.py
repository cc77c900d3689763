"""The fault-free reference: the daemon's scoring code over the input topic, in one process.

The truth the chaos run is checked against is rebuilt from the input topic as
Kafka holds it (faust's checker does the same): each partition's records in
offset order go through the same :class:`~streamer.codec.ReadingDecoder` and
:class:`~streamer.scoring.pipeline.ScoringPipeline` the daemon runs, with the
same configuration, without a single fault. A device lives in one partition
and the pipeline's decisions per device do not depend on how readings are
batched, so this is what the daemons must publish when every handover is
exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from streamer.codec import ReadingDecoder, Record
from streamer.config import Config
from streamer.lab.chaos.verdict import Reference
from streamer.scoring.pipeline import ScoringPipeline


def reference_run(config: Config, partitions: Mapping[int, Sequence[Record]],
                  fetched_at: float | None = None) -> Reference:
    """Alerts and rejections of a fault-free run over ``partitions`` (records in offset order).

    Args:
        config: The daemons' configuration.
        partitions: Input records per partition.
        fetched_at: Wall clock of the simulated fetch (event times are checked against it).
    """
    pipeline = ScoringPipeline(config)
    readings = config.readings
    decoder = ReadingDecoder(readings.channels, device_id_pattern=readings.device_id_pattern,
                             max_message_bytes=readings.max_message_bytes,
                             max_future_ms=readings.max_future_ms)
    batch = config.batching.max_batch
    reference = Reference()
    for partition in sorted(partitions):
        records = partitions[partition]
        for start in range(0, len(records), batch):
            chunk = records[start:start + batch]
            decoded = decoder.decode(chunk, fetched_at)
            result = pipeline.score(decoded.readings)
            for rejection in (*decoded.rejections, *result.rejections):
                record = chunk[rejection.record_index]
                reference.rejected[(record.partition, record.offset)] = rejection.reason
            reference.alerts.extend(result.alerts)
    return reference
