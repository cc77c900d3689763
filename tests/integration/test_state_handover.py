"""Per-device state moves with its partition: restart, rebalance, stale snapshots (real broker).

1. Restart: ``streamer run`` warms a fleet up, gets SIGTERM; a new process in
   the same group restores every device, scores the next readings without a
   single warm-up reading, and alerts a spike injected right after the
   restart (which needs warm state).
2. Rebalance: daemon A owns every partition; daemon B joins; the partitions
   that move are restored on B, A keeps the rest as they are and releases
   the moved devices. An operator's mute of every device, given before the
   move, holds on both daemons after it.
3. A crafted snapshot stamped beyond the committed offset is ignored, an
   older-stamped one is restored and brought up to date by replay, and one
   of another model layout is ignored.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streamer.codec import ReadingDecoder, decode_alert, encode_reading
from streamer.config import Config, RecordGateConfig
from streamer.embedded_broker import free_port
from streamer.feedback.messages import encode_feedback, new_feedback
from streamer.kafka.clients import ensure_state_topic, ensure_topics
from streamer.metrics import Metrics
from streamer.runtime.application import Application
from streamer.scoring.pipeline import ScoringPipeline
from streamer.state.manager import StateManager
from streamer.state.snapshots import FORMAT, Snapshot, decode_snapshot, encode_snapshot, take_rows
from tests.fakes import FakeProducer
from tests.integration.daemons import until

pytestmark = pytest.mark.integration

T = TypeVar("T")

DEVICES = [f"dev-{i:03d}" for i in range(12)]
WARMUP = 20
BASE_TS = 1_700_000_000_000
INTERVAL_MS = 100
SPIKE = 30.0


def value(device: int, step: int) -> float:
    rng = np.random.default_rng(device * 100_003 + step)
    return float(10.0 + device + np.sin(step / 5.0 + device) + 0.05 * rng.standard_normal())


async def produce(config: Config, steps: range, *, spike: tuple[str, int] | None = None,
                  devices: list[str] = DEVICES, partition: int | None = None,
                  spikes: Collection[tuple[str, int]] = ()) -> int:
    """One reading per device and step (keyed by device); returns how many."""
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for step in steps:
            for d, device_id in enumerate(devices):
                spiked = spike == (device_id, step) or (device_id, step) in spikes
                reading = value(d, step) + (SPIKE if spiked else 0.0)
                futures.append(await producer.send(
                    config.kafka.input_topic, key=device_id.encode(), partition=partition,
                    value=encode_reading(device_id, BASE_TS + step * INTERVAL_MS, reading)))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(futures)


async def mute_every_device(config: Config) -> None:
    """A pattern mute on every partition of the feedback topic (as ``streamer feedback mute --pattern``)."""
    message = encode_feedback(new_feedback("mute", device_pattern="dev-*", until_ts=BASE_TS + 10**9))
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for partition in range(config.kafka.topic_partitions):
            await producer.send_and_wait(config.kafka.feedback_topic, message, key=b"dev-*",
                                         partition=partition)
    finally:
        await producer.stop()


def base_config(config_factory: Callable[..., Config]) -> Config:
    return config_factory(
        # The record gate opens from the first scored residual: the spike right
        # after the restart is alerted only if the record learned before it
        # (rec_* fields) moved with the device's state.
        thresholds={"warmup": WARMUP, "record_gate": RecordGateConfig(min_readings=0)},
        # Faster rebalances: members notice a joining peer within a second.
        kafka={"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
        metrics={"refresh_interval_s": 0.2},
    )


def with_port(config: Config) -> Config:
    return msgspec.structs.replace(config, metrics=msgspec.structs.replace(config.metrics, port=free_port()))


def without_http(config: Config) -> Config:
    return msgspec.structs.replace(config, metrics=msgspec.structs.replace(config.metrics, enabled=False))


# ------------------------------------------------------------------ processes
def scrape(port: int) -> dict[str, float]:
    """Every sample as ``name{label="value",...}`` (labels sorted) or ``name``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def wait_for(condition: Callable[[], bool], timeout_s: float, message: str,
             process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"{message}: daemon exited with {process.returncode}")
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(message)


def start_daemon(config: Config, path: Path,
                 write_config: Callable[[Config, Path], Path]) -> subprocess.Popen[bytes]:
    config_path = write_config(config, path.with_suffix(".yaml"))
    with path.with_suffix(".log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "streamer", "run", "--config", str(config_path)],
                                stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()


def handled(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items()
               if k.split("{")[0] in ("streamer_readings_scored_total", "streamer_readings_warmup_total",
                                      "streamer_readings_rejected_total"))


async def read_alerts(config: Config) -> list[tuple[str, str, int]]:
    """(device, event, ts) of every alert on the alert topic."""
    consumer = AIOKafkaConsumer(config.kafka.alert_topic, bootstrap_servers=config.kafka.bootstrap_servers,
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    out: list[tuple[str, str, int]] = []
    try:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 1.5:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    if record.value is not None:
                        alert = decode_alert(record.value)
                        out.append((alert.device_id, alert.event, alert.ts))
                idle_since = time.monotonic()
    finally:
        await consumer.stop()
    return out


def test_restart_restores_warm_state_and_alerts_right_away(
    config_factory: Callable[..., Config], write_config: Callable[[Config, Path], Path],
    tmp_path: Path,
) -> None:
    config = base_config(config_factory)
    first = with_port(config)
    process = start_daemon(first, tmp_path / "first", write_config)
    try:
        wait_for(lambda: scrape(first.metrics.port).get("streamer_ready") == 1, 60, "first never ready",
                 process)
        produced = asyncio.run(produce(config, range(0, 30)))
        wait_for(lambda: handled(scrape(first.metrics.port)) >= produced, 60, "first did not finish", process)
        before = scrape(first.metrics.port)
        assert before["streamer_devices_warming_up"] == 0
    finally:
        assert stop(process) == 0

    second = with_port(config)
    process = start_daemon(second, tmp_path / "second", write_config)
    try:
        port = second.metrics.port
        restored = 'streamer_state_restored_devices_total{outcome="restored"}'
        wait_for(lambda: scrape(port).get(restored) == len(DEVICES), 60, "devices not restored", process)
        wait_for(lambda: scrape(port).get("streamer_devices_tracked") == len(DEVICES), 10, "gauge", process)
        after_restore = scrape(port)
        assert after_restore["streamer_devices_warming_up"] == 0
        assert after_restore['streamer_state_restored_devices_total{outcome="stale"}'] == 0
        # Snapshots were stamped at the committed offsets: nothing to replay.
        assert after_restore["streamer_state_replayed_readings_total"] == 0
        # Right after the restart: a spike on one device, among normal readings.
        produced = asyncio.run(produce(config, range(30, 45), spike=(DEVICES[3], 32)))
        wait_for(lambda: handled(scrape(port)) >= produced, 60, "second did not finish", process)
        metrics = scrape(port)
        assert metrics.get("streamer_readings_warmup_total", 0.0) == 0  # no device warmed up again
        assert metrics["streamer_readings_scored_total"] == produced
        assert metrics["streamer_devices_warming_up"] == 0
    finally:
        assert stop(process) == 0
    alerts = asyncio.run(read_alerts(config))
    assert (DEVICES[3], "open", BASE_TS + 32 * INTERVAL_MS) in alerts, alerts


# ------------------------------------------------------------------ in-process
def sample(daemon: Application, name: str, **labels: str) -> float:
    return daemon.metrics.registry.get_sample_value(name, labels) or 0.0


def taken_over(daemon: Application) -> bool:
    """Assigned partitions all active (restored or kept), none pending."""
    consumer = daemon.consumer
    if consumer is None:
        return False
    assignment = consumer.assignment()
    return bool(assignment) and assignment == set(daemon.commits.active) and not consumer.paused()


def consumed(daemon: Application) -> float:
    return sample(daemon, "streamer_readings_consumed_total")


def scored_or_warming(daemon: Application) -> float:
    return sample(daemon, "streamer_readings_scored_total") + sample(daemon, "streamer_readings_warmup_total")


async def test_partitions_that_move_to_a_joining_daemon_keep_their_state(
    config_factory: Callable[..., Config],
) -> None:
    config = without_http(base_config(config_factory))
    first, second = Application(config, metrics=Metrics()), Application(config, metrics=Metrics())
    first_task = asyncio.create_task(first.run())
    tasks = [first_task]
    try:
        await until(lambda: taken_over(first), 30, "first never took over", *tasks)
        produced = await produce(config, range(0, 25))
        # Scored (or counted as warm-up), not only fetched: the counters move after the batch is done.
        await until(lambda: scored_or_warming(first) >= produced, 30, "first did not score", *tasks)
        warmup_before = sample(first, "streamer_readings_warmup_total")
        assert warmup_before == WARMUP * len(DEVICES)
        # Operator feedback is device state too: every device is muted before the partitions move.
        await mute_every_device(config)
        await until(lambda: sample(first, "streamer_feedback_applied_total", kind="mute",
                                   method="zscore", model_version=first.pipeline.predictor.version)
                    == config.kafka.topic_partitions, 30, "the mute was not applied", *tasks)

        second_task = asyncio.create_task(second.run())
        tasks.append(second_task)
        partitions = config.kafka.topic_partitions
        await until(lambda: taken_over(second) and taken_over(first)
                    and len(first.commits.active) + len(second.commits.active) == partitions,
                    40, "partitions did not settle across both daemons", *tasks)
        moved = [tp.partition for tp in second.commits.active]
        restored = sample(second, "streamer_state_restored_devices_total", outcome="restored")
        assert restored > 0
        assert len(second.pipeline.registry) == restored
        assert second.pipeline.registry.warming_up(WARMUP) == 0
        await until(lambda: sample(second, "streamer_devices_warming_up") == 0
                    and sample(second, "streamer_devices_tracked") == restored, 5, "B's gauges", *tasks)
        # A released exactly the devices that moved; it kept its own partitions as they were.
        assert len(first.pipeline.registry) + restored == len(DEVICES)
        assert first.pipeline.registry.slots_of_partitions(moved).size == 0
        assert sample(first, "streamer_state_restored_devices_total", outcome="restored") == 0

        # A spike on every device: the moved ones kept their mute on B, the others on A.
        later = await produce(config, range(25, 35), spikes=[(device, 30) for device in DEVICES])
        await until(lambda: consumed(first) + consumed(second) >= produced + later, 30,
                    "readings after the rebalance not consumed", *tasks)
        await until(lambda: sample(first, "streamer_readings_scored_total")
                    + sample(second, "streamer_readings_scored_total") >= later + produced
                    - WARMUP * len(DEVICES), 10, "not scored", *tasks)
        assert sample(second, "streamer_readings_warmup_total") == 0
        assert sample(first, "streamer_readings_warmup_total") == warmup_before
        # The revoke's snapshot covered the mute, and its offsets were committed: B read nothing again.
        assert sample(second, "streamer_feedback_applied_total", kind="mute", method="zscore",
                      model_version=second.pipeline.predictor.version) == 0
        for daemon in (first, second):
            assert sample(daemon, "streamer_suppressed_flags_total", reason="mute") >= 1
            assert sample(daemon, "streamer_alerts_total", event="open", method="zscore") == 0
    finally:
        first.request_stop()
        second.request_stop()
        codes = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert codes == [0, 0]


async def _commit(config: Config, partition: int, offset: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers,
                                group_id=config.kafka.group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(config.kafka.input_topic, partition)
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


async def _records(config: Config, partition: int, end: int) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(config.kafka.input_topic, partition)
        consumer.assign([tp])
        out: list[Any] = []
        while len(out) < end:
            out.extend((await consumer.getmany(tp, timeout_ms=500)).get(tp, []))
        return out[:end]
    finally:
        await consumer.stop()


async def _craft(config: Config, records: list[Any], edits: dict[str, tuple[int, int, str | None]]) -> None:
    """Snapshots computed offline from ``records``, per device: (``seen`` to mark, stamp, fingerprint)."""
    pipeline = ScoringPipeline(config)
    readings = config.readings
    decoder = ReadingDecoder(readings.channels, device_id_pattern=readings.device_id_pattern,
                             max_message_bytes=readings.max_message_bytes,
                             max_future_ms=readings.max_future_ms)
    pipeline.score(decoder.decode(records).readings)
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        state = StateManager(pipeline, config, producer=producer, run=_inline, metrics=Metrics())
        for device_id, (seen, stamp, fingerprint) in edits.items():
            slot = pipeline.registry.slot(device_id)
            assert slot is not None
            pipeline.registry.table["seen"][slot] = seen
            row = take_rows(pipeline.registry.table, state.extras, state.schema, np.array([slot]))[0]
            snapshot = Snapshot(FORMAT, fingerprint or state.schema.fingerprint, 0, stamp, 0, row)
            await producer.send_and_wait(config.kafka.state_topic_name(), encode_snapshot(snapshot),
                                         key=device_id.encode(), partition=0)
    finally:
        await producer.stop()


async def _inline(fn: Callable[[], T], job: str) -> T:
    return fn()


async def test_snapshots_stamped_beyond_the_committed_offset_are_ignored(
    config_factory: Callable[..., Config],
) -> None:
    config = without_http(base_config(config_factory))
    devices = ["x", "y", "w"]
    kafka = config.kafka
    # Topics first (a produce would auto-create the input topic with the broker's default partitions).
    await ensure_topics(kafka, [kafka.input_topic])
    await ensure_state_topic(kafka, kafka.state_topic_name(), kafka.topic_partitions)
    # Offsets 0..59 on partition 0: x, y, w in turn.
    await produce(config, range(20), devices=devices, partition=0)
    records = await _records(config, 0, 60)
    await _commit(config, 0, 60)
    # As of offset 30 (records 0..29: ten readings each), with marked `seen` counts.
    await _craft(config, records[:30], {
        "y": (5000, 30, None),  # usable: restored, then replayed from offset 30
        "x": (9000, 75, None),  # stamped beyond the committed 60: ignored
        "w": (7000, 30, "0" * 16),  # another model or layout: ignored
    })
    daemon = Application(config, metrics=Metrics())
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: taken_over(daemon), 30, "daemon never took over", task)
        assert sample(daemon, "streamer_state_restored_devices_total", outcome="restored") == 1
        assert sample(daemon, "streamer_state_restored_devices_total", outcome="stale") == 1
        assert sample(daemon, "streamer_state_restored_devices_total", outcome="mismatch") == 1
        registry = daemon.pipeline.registry
        seen = {d: int(registry.table["seen"][registry.slot(d)]) for d in devices}
        # y: its 10 snapshotted readings (marked 5000) plus the 10 at offsets 30..59.
        # x, w: no usable snapshot; they get the replayed readings from offset 30 only.
        assert seen == {"y": 5010, "x": 10, "w": 10}
        assert sample(daemon, "streamer_state_replayed_readings_total") == 30
        # x and w warm up again, and the gauge says so.
        await until(lambda: sample(daemon, "streamer_devices_warming_up") == 2, 5, "warming gauge", task)
        # Scoring resumes at the committed offset: nothing before it is scored again.
        assert consumed(daemon) == 0
    finally:
        daemon.request_stop()
        code = await asyncio.wait_for(task, 30)
    assert code == 0



async def _state_topic(config: Config, partition: int) -> list[tuple[str, Snapshot]]:
    """Every snapshot on state partition ``partition``, in order, with its device."""
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(config.kafka.state_topic_name(), partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        out: list[tuple[str, Snapshot]] = []
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                snapshot = decode_snapshot(record.value) if record.value is not None else None
                if record.key is not None and snapshot is not None:
                    out.append((record.key.decode(), snapshot))
        return out
    finally:
        await consumer.stop()


async def test_a_snapshot_taken_while_readings_are_scored_restores_to_exactly_its_stamped_offset(
    config_factory: Callable[..., Config],
) -> None:
    # One device per slice, and no periodic round: the test runs the one round.
    config = without_http(config_factory(
        thresholds={"warmup": WARMUP}, state={"slice_devices": 1, "snapshot_interval_s": 3600.0},
        # Per-device arithmetic only, so state recomputed offline from the same records is bit-identical.
        predictor={"kind": "baseline"}))
    kafka = config.kafka
    await ensure_topics(kafka, [kafka.input_topic])
    daemon = Application(config, metrics=Metrics())
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: taken_over(daemon), 30, "daemon never took over", task)
        warm = await produce(config, range(30), partition=0)
        await until(lambda: scored_or_warming(daemon) >= warm, 30, "warm-up not scored", task)

        round_done = asyncio.Event()

        async def feed() -> int:
            """Readings on partition 0, a step at a time, until the round is over."""
            sent, step = 0, 30
            while not round_done.is_set() and step < 400:
                sent += await produce(config, range(step, step + 1), partition=0)
                step += 1
            return sent

        feeding = asyncio.create_task(feed())
        await until(lambda: consumed(daemon) > warm, 30, "live readings not consumed", task)
        # Spread as the periodic round is, so that batches arrive between its slices.
        await daemon.commits.snapshot(list(daemon.commits.active), daemon.state, daemon.scorer, spread_s=1.5)
        round_done.set()
        taken = await _state_topic(config, 0)  # the round's snapshots, all acknowledged by now
        total = warm + await feeding
        await until(lambda: scored_or_warming(daemon) >= total, 30, "live readings not scored", task)
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)

    assert sorted(device_id for device_id, _ in taken) == sorted(DEVICES)
    # One device per slice, each taken between batches: readings were scored during the round.
    assert len({snapshot.offset for _, snapshot in taken}) > 1
    records = await _records(config, 0, total)
    readings = config.readings
    decoder = ReadingDecoder(readings.channels, device_id_pattern=readings.device_id_pattern,
                             max_message_bytes=readings.max_message_bytes,
                             max_future_ms=readings.max_future_ms)
    for stamp in sorted({snapshot.offset for _, snapshot in taken}):
        # The fleet's state after exactly the records before the stamp, computed offline ...
        offline = ScoringPipeline(config)
        offline.score(decoder.decode(records[:stamp]).readings)
        # ... against the snapshots stamped there, restored into a fresh fleet.
        restored = StateManager(ScoringPipeline(config), config, producer=FakeProducer(), run=_inline,
                                metrics=Metrics())
        at_stamp = {d: s for d, s in taken if s.offset == stamp}
        restored.apply(0, at_stamp)
        for device_id in at_stamp:
            expected = _row(offline, restored, device_id)
            assert _row(restored.fleet, restored, device_id) == expected, f"{device_id} at offset {stamp}"


def _row(pipeline: Any, state: StateManager, device_id: str) -> bytes:
    slot = pipeline.registry.slot(device_id)
    assert slot is not None
    return take_rows(pipeline.registry.table, state.extras, state.schema, np.array([slot]))[0]
