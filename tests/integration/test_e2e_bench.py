"""``streamer bench e2e`` and ``streamer bench scaleout`` in tiny configurations against the session broker.

They run every step of the real benchmarks from the command line (daemon
processes, the raw and naive reference paths, the alert subscriber, a fixed
load, a ladder step, a group of daemons frozen while a backlog is produced)
and check the JSON written is complete and consistent. No timing
assertions: the figures depend on the machine.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from streamer.cli import main
from streamer.codec import encode_reading
from streamer.config import Config
from streamer.embedded_broker import EmbeddedBroker
from streamer.kafka.clients import ensure_topics
from streamer.lab.bench.e2e_paths import naive_path

pytestmark = pytest.mark.integration

LOAD = 400


@pytest.fixture(scope="module")
def e2e_run(broker: EmbeddedBroker, config_factory: Callable[..., Config],
            write_config: Callable[[Config, Path], Path],
            tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    workdir = tmp_path_factory.mktemp("e2e")
    config_path = write_config(config_factory(), workdir / "config.yaml")
    out = workdir / "e2e.json"
    code = main(["bench", "e2e", "--config", str(config_path),
                 "--bootstrap-servers", broker.bootstrap_servers, "--workdir", str(workdir / "run"),
                 "--devices", "40", "--backlog-steps", "150",
                 "--partitions", "3", "--loads", str(LOAD), "--warm-seconds", "1", "--measure-seconds", "3",
                 "--ladder", "0.05", "--ladder-seconds", "1.5", "--naive-seconds", "2",
                 "--naive-max-readings", "5", "--alerts-per-s", "20", "--restore", "--json", str(out)])
    assert code == 0
    logs = "\n".join(path.name for path in (workdir / "run").iterdir())
    return json.loads(out.read_text()), logs


@pytest.fixture(scope="module")
def e2e_record(e2e_run: tuple[dict[str, Any], str]) -> dict[str, Any]:
    return e2e_run[0]


def test_e2e_record_has_the_fields_the_checks_read(e2e_record: dict[str, Any]) -> None:
    record = e2e_record
    assert record["benchmark"] == "e2e" and record["quick"] is False
    for name in ("streamer_max_readings_per_s", "raw_aiokafka_max_readings_per_s",
                 "naive_predict_readings_per_s"):
        assert isinstance(record[name], float) and record[name] > 0, name
    assert "cores" in record["machine"]
    latency = record["latency_ms"][str(LOAD)]
    assert set(latency) == {"p50", "p99", "p999"}
    assert 0 < latency["p50"] <= latency["p99"] <= latency["p999"]
    assert record["ratio_to_raw"] == pytest.approx(
        record["streamer_max_readings_per_s"] / record["raw_aiokafka_max_readings_per_s"], rel=1e-2)
    assert set(record["targets"]) == {"vs_raw", "vs_naive", "p99_ms_at_10000"}
    assert record["targets"]["p99_ms_at_10000"]["met"] is None  # no 10K load in this run
    # The raw path ran before and after the daemon; the upper bound is the mean of the two.
    before, after = record["raw"]["runs_readings_per_s"]
    assert before > 0 and after > 0
    assert record["raw_aiokafka_max_readings_per_s"] == pytest.approx((before + after) / 2, rel=1e-3)


def test_e2e_every_path_read_the_whole_backlog_and_the_daemon_exited_cleanly(
        e2e_run: tuple[dict[str, Any], str]) -> None:
    e2e_record, files = e2e_run
    assert {"daemon.log", "daemon-400.log", "alerts-400.txt"} <= set(files.split())  # --workdir keeps them
    backlog = e2e_record["fleet"]["backlog_readings"]
    assert backlog == 40 * 150
    assert e2e_record["raw"]["readings"] == backlog
    assert e2e_record["raw"]["rejected"] == 0
    assert e2e_record["drain"]["readings"] == backlog
    assert e2e_record["naive"]["predict_calls"] == 5
    # No predict() before a device's window (the shipped bundle's 32 readings) is full.
    assert e2e_record["naive"]["window"] == 32
    assert e2e_record["naive"]["readings_without_predict"] >= 32
    assert e2e_record["daemon"]["exit_code"] == 0


def test_e2e_fixed_load_and_ladder_report_what_was_sent_and_handled(e2e_record: dict[str, Any]) -> None:
    (load,) = e2e_record["loads"]
    assert load["rate"] == LOAD
    assert 0 < load["achieved_per_s"] <= LOAD * 1.1
    assert load["handled_per_s"] > 0
    assert isinstance(load["lag_bounded"], bool)
    assert load["latency_samples"] >= 1
    assert load["broker_floor_ms"]["count"] > 0
    decision = load["daemon_histograms_ms"]["event_to_decision"]
    assert decision["count"] > 0
    (step,) = e2e_record["ladder"]
    assert step["fraction"] == 0.05
    # The drain rate is reported rounded to 0.1 readings/s, the target from the unrounded rate.
    assert abs(step["target_per_s"] - 0.05 * e2e_record["streamer_max_readings_per_s"]) <= 1


def test_e2e_fixed_load_reports_scoring_pauses_and_the_restart_restores_every_device(
        e2e_record: dict[str, Any]) -> None:
    (load,) = e2e_record["loads"]
    assert isinstance(load["max_scoring_pause_ms"], float) and load["max_scoring_pause_ms"] >= 0
    pauses = load["scoring_pauses"]
    assert pauses["count"] >= 0 and 0 <= pauses["over_100ms"] <= pauses["over_20ms"] <= pauses["count"]
    assert sum(pauses["over_20ms_by_cause"].values()) == pauses["over_20ms"]
    assert load["daemon_exit_code"] == 0 and load["stop_seconds"] > 0
    restore = load["restore"]
    # The load's daemon snapshotted every device at shutdown; the fresh one restored them all.
    assert restore["partitions"] == 3
    assert restore["devices_restored"] == restore["devices_tracked"] == 40
    assert restore["partition_seconds_sum"] > 0
    assert restore["exit_code"] == 0


async def test_naive_path_ends_when_the_backlog_has_no_full_window(
        config_factory: Callable[..., Config]) -> None:
    config = config_factory(kafka={"topic_partitions": 1})
    await ensure_topics(config.kafka, [config.kafka.input_topic])
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers)
    await producer.start()
    try:
        for step in range(5):  # 5 readings per device, against the bundle's window of 32
            for device in range(40):
                await producer.send(config.kafka.input_topic,
                                    encode_reading(f"d{device}", 1_700_000_000_000 + step * 1000, 1.0))
        await producer.flush()
    finally:
        await producer.stop()
    # Without the end at `expect`, it would wait for a full window until its 600 s timeout.
    result = await asyncio.wait_for(naive_path(config, 2.0, 5, 600.0, expect=200), 120)
    assert result["records_read"] == 200
    assert result["predict_calls"] == 0 and result["readings_per_s"] is None
    assert "no device had a full window of 32 readings" in result["skipped"]


@pytest.fixture(scope="module")
def scaleout_record(broker: EmbeddedBroker, config_factory: Callable[..., Config],
                    write_config: Callable[[Config, Path], Path],
                    tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("scaleout")
    base = config_factory()
    # No state topic traffic: the scale-out phases here only check the bookkeeping.
    base = msgspec.structs.replace(base, state=msgspec.structs.replace(base.state, enabled=False))
    out = workdir / "scaleout.json"
    code = main(["bench", "scaleout", "--config", str(write_config(base, workdir / "config.yaml")),
                 "--bootstrap-servers", broker.bootstrap_servers, "--processes", "1", "2", "--devices", "200",
                 "--backlog-steps", "300", "--partitions", "4", "--json", str(out)])
    assert code == 0
    record: dict[str, Any] = json.loads(out.read_text())
    return record


def test_scaleout_reports_every_process_count_with_the_partitions_split(
        scaleout_record: dict[str, Any]) -> None:
    record = scaleout_record
    assert [phase["processes"] for phase in record["phases"]] == [1, 2]
    for phase in record["phases"]:
        count = phase["processes"]
        assert phase["backlog_readings"] == 200 * 300
        assert len(phase["per_process_per_s"]) == count
        assert len(phase["daemon_cpu_percent"]) == count
        assert sum(phase["partitions_per_process"]) == 4
        assert min(phase["partitions_per_process"]) >= 1
        assert phase["total_per_s"] > 0
        assert phase["total_per_s"] == pytest.approx(sum(phase["per_process_per_s"]), rel=1e-3)
        assert phase["exit_codes"] == [0] * count
        assert phase["bound"]
    assert record["phases"][0]["scaling_vs_one"] == 1.0
    assert "cores" in record["machine"]
