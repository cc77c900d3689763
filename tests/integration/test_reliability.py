"""Reliability promises against a real broker: backpressure, no zombies, offset resets, commits.

1. Backpressure (both ``runtime.scoring`` placements): a slow scorer under a flood pauses and resumes every
   partition; the queue never holds more than ``pause_high`` plus one fetch,
   and every reading is still scored and committed.
2. A batch spanning two partitions whose publish fails commits neither.
3. Brokers gone (a private broker frozen with SIGSTOP): ``/healthz`` fails,
   then the process exits non-zero.
4. A wedged scorer (commits stop while records wait): ``/healthz`` fails,
   then the process exits non-zero although the scorer never returns, on a
   scoring thread or on the event loop itself (``runtime.scoring``).
5. A committed offset beyond the log end is reset to ``auto_offset_reset``,
   counted and logged, and the partition is consumed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import patch

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamer.codec import encode_reading
from streamer.config import Config
from streamer.embedded_broker import EmbeddedBroker
from streamer.kafka.clients import ensure_topics
from streamer.kafka.publisher import Publisher
from streamer.metrics import Metrics
from streamer.runtime import fetcher
from streamer.runtime.application import Application
from streamer.scoring.pipeline import ScoreResult, ScoringPipeline
from tests.integration.daemons import until

pytestmark = pytest.mark.integration

BASE_TS = 1_700_000_000_000
PropertyRecorder = Callable[[str, object], None]


# ------------------------------------------------------------------ helpers
async def produce(config: Config, count: int, *, partition: int | None = None,
                  devices: int = 10) -> dict[int, int]:
    """``count`` readings keyed by device; returns the end offset written per partition (from the acks)."""
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(config.kafka.input_topic, key=f"dev-{i % devices}".encode(),
                                partition=partition,
                                value=encode_reading(f"dev-{i % devices}", BASE_TS + i * 100, float(i % 7)))
            for i in range(count)
        ]
        acks = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    ends: dict[int, int] = {}
    for ack in acks:
        ends[ack.partition] = max(ends.get(ack.partition, 0), ack.offset + 1)
    return ends


async def committed(config: Config) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers,
                                group_id=config.kafka.group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(config.kafka.input_topic, p))
                for p in range(config.kafka.topic_partitions)}
    finally:
        await consumer.stop()


async def commit(config: Config, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` for the group as if an earlier member had."""
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers,
                                group_id=config.kafka.group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = {TopicPartition(config.kafka.input_topic, p): offset for p, offset in offsets.items()}
        consumer.assign(list(tps))
        await consumer.commit(tps)
    finally:
        await consumer.stop()


def sample(daemon: Application, name: str, **labels: str) -> float:
    return daemon.metrics.registry.get_sample_value(name, labels) or 0.0


def handled(daemon: Application) -> float:
    rejected = sum(metric.value for family in daemon.metrics.registry.collect()
                   if family.name == "streamer_readings_rejected"
                   for metric in family.samples if metric.name.endswith("_total"))
    return (sample(daemon, "streamer_readings_scored_total")
            + sample(daemon, "streamer_readings_warmup_total") + rejected)


def probe(port: int, path: str) -> int | None:
    """HTTP status of a probe, or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def start(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT,
                                env=os.environ.copy())


def wait_ready(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"daemon exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        if probe(port, "/readyz") == 200:
            return
        time.sleep(0.1)
    pytest.fail("daemon never became ready")


def watch_until_exit(process: subprocess.Popen[bytes], port: int,
                     limit_s: float) -> tuple[float | None, float]:
    """Poll /healthz until the process exits; (seconds to the first 503 while it ran, seconds to exit)."""
    started = time.monotonic()
    first_failure: float | None = None
    while process.poll() is None and time.monotonic() - started < limit_s:
        status = probe(port, "/healthz")
        if status == 503 and first_failure is None and process.poll() is None:
            first_failure = time.monotonic() - started
        # Often: between failing and exiting the daemon only commits and closes its clients.
        time.sleep(0.01)
    try:
        process.wait(1)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"daemon still running {limit_s:.0f}s after the fault")
    return first_failure, time.monotonic() - started


def with_section(config: Config, name: str, **values: Any) -> Config:
    section = msgspec.structs.replace(getattr(config, name), **values)
    return msgspec.structs.replace(config, **{name: section})


# ------------------------------------------------------------------ 1. backpressure
@pytest.mark.parametrize("scoring", ["event_loop", "thread"])
async def test_slow_scorer_pauses_fetching_and_still_scores_and_commits_everything(
    config_factory: Callable[..., Config], record_property: PropertyRecorder, scoring: str,
) -> None:
    high, low, max_batch = 150, 50, 50
    config = config_factory(
        predictor={"kind": "baseline"},
        batching={"max_batch": max_batch, "queue_size": 8, "pause_high": high, "pause_low": low,
                  "max_wait_ms": 1.0},
        metrics={"enabled": False},
        runtime={"scoring": scoring},
    )
    ends = await produce(config, 3000)  # the flood is waiting before the daemon starts
    produced = sum(ends.values())
    original = ScoringPipeline.score

    def slow_score(self: ScoringPipeline, readings: Any, partitions: Any = None) -> ScoreResult:
        time.sleep(0.03)  # a scorer far slower than the fetch loop
        return original(self, readings, partitions)

    daemon = Application(config, metrics=Metrics())
    with patch.object(ScoringPipeline, "score", slow_score):
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: handled(daemon) >= produced, 90, "not every reading was handled", task)
            expected = {TopicPartition(config.kafka.input_topic, p): end for p, end in ends.items()}
            await until(lambda: daemon.commits.committed_offsets() == expected,
                        10, "finished offsets not committed", task)
            paused_at_end = sample(daemon, "streamer_partitions_paused", reason="backpressure")
        finally:
            daemon.request_stop()
            code = await asyncio.wait_for(task, 30)
    assert code == 0
    assert handled(daemon) == produced
    assert await committed(config) == {p: ends.get(p) for p in range(config.kafka.topic_partitions)}
    pauses = sample(daemon, "streamer_backpressure_pauses_total")
    # Paused more than once: it was resumed in between.
    assert pauses >= 2
    assert paused_at_end == 0
    # Memory stays bounded: at most the high mark plus one fetch was ever queued.
    assert daemon.batcher.peak_readings <= high + max_batch
    assert daemon.batcher.peak_readings >= high  # the flood did reach the high mark
    # A fresh group: each partition started at the earliest offset, counted as such.
    assert sample(daemon, "streamer_offset_resets_total", reason="no_committed_offset") == len(ends)
    assert sample(daemon, "streamer_offset_resets_total", reason="out_of_range") == 0
    record_property("backpressure_pauses", pauses)
    record_property("peak_queued_readings", daemon.batcher.peak_readings)
    record_property("pause_high_plus_one_fetch", high + max_batch)


# ------------------------------------------------------------------ 2. commit frontier
async def test_failed_publish_of_a_batch_spanning_two_partitions_commits_neither(
    config_factory: Callable[..., Config], unacknowledged_send: Callable[..., Any],
) -> None:
    config = config_factory(predictor={"kind": "baseline"}, state={"enabled": False},
                            batching={"max_wait_ms": 2000.0}, metrics={"enabled": False})
    kafka = config.kafka
    await ensure_topics(kafka, [kafka.input_topic])
    for partition in (0, 1):
        await produce(config, 10, partition=partition)
    await commit(config, {0: 10, 1: 10})  # an earlier owner finished offsets 0..9 of both
    for partition in (0, 1):
        await produce(config, 5, partition=partition)
    spans: list[list[int]] = []
    score = ScoringPipeline.score

    def spy(self: ScoringPipeline, readings: Any, partitions: Any = None) -> ScoreResult:
        spans.append(sorted(set(partitions.tolist())))  # the input partitions of one batch's readings
        return score(self, readings, partitions)

    daemon = Application(config, metrics=Metrics())
    with patch.object(ScoringPipeline, "score", spy), patch.object(Publisher, "send", unacknowledged_send):
        code = await asyncio.wait_for(daemon.run(), 60)
    assert code == 1
    assert spans == [[0, 1]]  # one batch, both partitions, and it failed
    assert await committed(config) == {0: 10, 1: 10, 2: None}


# ------------------------------------------------------------------ 3. brokers gone
def test_brokers_gone_fail_healthz_then_the_daemon_exits_nonzero(
    config_factory: Callable[..., Config], write_config: Callable[[Config, Path], Path],
    private_broker: EmbeddedBroker, tmp_path: Path, record_property: PropertyRecorder,
) -> None:
    config = config_factory(
        predictor={"kind": "baseline"},
        kafka={"unreachable_timeout_s": 4.0, "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
        runtime={"shutdown_timeout_s": 3.0},
    )
    config = with_section(config, "kafka", bootstrap_servers=private_broker.bootstrap_servers)
    port = config.metrics.port
    log_path = tmp_path / "daemon.log"
    process = start(["-m", "streamer", "run", "--config", str(write_config(config, tmp_path / "c.yaml"))],
                    log_path)
    try:
        wait_ready(process, port, log_path)
        asyncio.run(produce(config, 30))
        private_broker.pause()  # SIGSTOP: connections stay open, nothing answers
        first_failure, exited = watch_until_exit(process, port, 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        private_broker.resume()
    log = log_path.read_text()
    assert process.returncode == 1, log[-3000:]
    assert first_failure is not None, "/healthz never failed before the process exited"
    assert "brokers unreachable" in log
    record_property("seconds_to_healthz_503", round(first_failure, 2))
    record_property("seconds_to_exit", round(exited, 2))


# ------------------------------------------------------------------ 4. wedged scorer
WEDGED_LAUNCHER = """
import sys
import threading

from streamer.cli import main
from streamer.scoring.pipeline import ScoringPipeline


def wedged(self, readings, partitions=None):
    threading.Event().wait()  # a model call that never returns


ScoringPipeline.score = wedged
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


# event_loop: the wedged call blocks the event loop itself, so the loop's
# watchdog cannot run; the loop guard thread ends the process.
@pytest.mark.parametrize("scoring", ["event_loop", "thread"])
def test_wedged_scorer_fails_healthz_then_the_daemon_exits_nonzero(
    config_factory: Callable[..., Config], write_config: Callable[[Config, Path], Path],
    tmp_path: Path, record_property: PropertyRecorder, scoring: str,
) -> None:
    config = config_factory(predictor={"kind": "baseline"},
                            runtime={"commit_stall_timeout_s": 3.0, "shutdown_timeout_s": 2.0,
                                     "scoring": scoring})
    port = config.metrics.port
    launcher = tmp_path / "wedged.py"
    launcher.write_text(WEDGED_LAUNCHER, encoding="utf-8")
    log_path = tmp_path / "daemon.log"
    process = start([str(launcher), str(write_config(config, tmp_path / "c.yaml"))], log_path)
    try:
        wait_ready(process, port, log_path)
        asyncio.run(produce(config, 20))
        first_failure, exited = watch_until_exit(process, port, 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = log_path.read_text()
    assert process.returncode == 1, log[-3000:]
    assert first_failure is not None, "/healthz never failed before the process exited"
    assert "no offset committed" in log
    assert set(asyncio.run(committed(config)).values()) == {None}  # nothing was finished
    record_property("seconds_to_healthz_503", round(first_failure, 2))
    record_property("seconds_to_exit", round(exited, 2))


# ------------------------------------------------------------------ 5. offset reset
async def test_committed_offset_beyond_the_log_end_is_reset_counted_and_consumed(
    config_factory: Callable[..., Config], caplog: pytest.LogCaptureFixture,
) -> None:
    # State off: the restore would replay towards offset 1000 until state.restore_timeout_s.
    config = config_factory(predictor={"kind": "baseline"}, state={"enabled": False},
                            metrics={"enabled": False})
    kafka = config.kafka
    await ensure_topics(kafka, [kafka.input_topic])
    ends = await produce(config, 10, partition=0)
    await commit(config, {0: 1000})  # beyond the end (10): e.g. the topic was recreated
    daemon = Application(config, metrics=Metrics())
    with patch.object(fetcher, "BEYOND_END_CONFIRM_S", 1.0), \
            caplog.at_level(logging.WARNING, "streamer.runtime.fetcher"):
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: handled(daemon) >= ends[0], 60, "partition 0 was never consumed", task)
            await until(lambda: daemon.commits.committed_offsets().get(TopicPartition(kafka.input_topic, 0))
                        == ends[0], 10,
                        "partition 0 not committed", task)
            assert daemon.health.live() == (True, "ok")
        finally:
            daemon.request_stop()
            code = await asyncio.wait_for(task, 30)
    assert code == 0
    assert sample(daemon, "streamer_offset_resets_total", reason="out_of_range") == 1
    assert handled(daemon) == ends[0]  # each record once
    assert (await committed(config))[0] == ends[0]
    assert "partition 0: offset 1000 is out of range; reset to the earliest offset 0" in caplog.text
