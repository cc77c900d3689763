"""Models that change while the daemon runs, on the real broker.

The daemon follows a bundle registry (``predictor.lstm.registry``). While it
consumes: a promotion swaps the model between two batches (every reading
handled once, alerts carry the new version from one batch boundary on); a
corrupt or incompatible ``current`` is refused and counted while the old
model keeps scoring; a rollback swaps back; and a daemon killed during a
swap restarts on the registry's model with its devices' state (history
restored, forecaster rebuilt from the ring buffer).
"""

from __future__ import annotations

import asyncio
import functools
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer

from models.bundle import default_bundle_path
from models.registry import BundleRegistry
from streamer.config import Config, RecordGateConfig
from streamer.metrics import Metrics
from streamer.runtime.application import Application
from streamer.state.snapshots import decode_snapshot
from tests.bundle_variants import bundle_variant, damage_weights
from tests.integration.daemons import BASE_TS, INTERVAL_MS, alerts_of, produce_fleet, taken_over, total, until

pytestmark = pytest.mark.integration

DEVICES = [f"sw-{i:02d}" for i in range(8)]
WARMUP = 20
SPIKE = 8.0
# Readings of this test's fleet (tests.integration.daemons.produce_fleet).
produce = functools.partial(produce_fleet, devices=DEVICES)


def scored_once(daemon: Application) -> float:
    """Readings scored or warming up: each reading once, so the count equals what was produced."""
    return total(daemon, "streamer_readings_scored_total") + total(daemon, "streamer_readings_warmup_total")


def refused(daemon: Application, reason: str) -> Callable[[], bool]:
    return lambda: total(daemon, "streamer_model_refusals_total", role="current", reason=reason) == 1


def last_ts(daemon: Application, device_id: str) -> int | None:
    slot = daemon.pipeline.registry.slot(device_id)
    return None if slot is None else int(daemon.pipeline.registry.last_ts(np.array([slot]))[0])


async def latest_snapshots(config: Config) -> dict[str, str]:
    """Each device's latest snapshot fingerprint on the state topic."""
    consumer = AIOKafkaConsumer(config.kafka.state_topic_name(),
                                bootstrap_servers=config.kafka.bootstrap_servers,
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    latest: dict[str, str] = {}
    try:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 1.5:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    snapshot = decode_snapshot(record.value) if record.value is not None else None
                    if snapshot is not None and record.key is not None:
                        latest[record.key.decode()] = snapshot.fingerprint
                idle_since = time.monotonic()
    finally:
        await consumer.stop()
    return latest


def swap_config(config_factory: Callable[..., Config], registry: Path,
                **sections: dict[str, object]) -> Config:
    base = config_factory(thresholds={"warmup": WARMUP, "record_gate": RecordGateConfig(enabled=False)},
                          alerts={"resolve_after": 5}, metrics={"enabled": False}, **sections)
    lstm = base.predictor.lstm
    return msgspec.structs.replace(base, predictor=msgspec.structs.replace(
        base.predictor, lstm=msgspec.structs.replace(lstm, registry=str(registry), poll_interval_s=0.2)))


def new_registry(tmp_path: Path) -> tuple[BundleRegistry, str]:
    registry = BundleRegistry(tmp_path / "registry")
    first = registry.add(default_bundle_path())
    registry.promote(first)
    return registry, first


async def test_a_promotion_swaps_the_model_while_consuming_and_a_rollback_swaps_it_back(
    config_factory: Callable[..., Config], tmp_path: Path,
) -> None:
    registry, first = new_registry(tmp_path)
    second = registry.add(bundle_variant(tmp_path / "second", 1, head_shift=0.02, parity="true")[0])
    config = swap_config(config_factory, registry.root)
    daemon = Application(config, metrics=Metrics())
    task = asyncio.create_task(daemon.run())
    produced = 0
    try:
        await until(lambda: taken_over(daemon), 30, "never took over", task)
        produced += await produce(config, range(0, 60), {(DEVICES[1], 50): SPIKE})
        await until(lambda: scored_once(daemon) >= produced, 60, "warm-up not scored", task)
        # Promote while readings stream in: the swap happens between two batches of a live stream.
        before = produced
        stream = asyncio.create_task(produce(config, range(60, 130), pace_s=0.02))
        await asyncio.sleep(0.3)
        registry.promote(second)
        await until(lambda: daemon.pipeline.predictor.version == second, 30, "promotion not followed", task)
        at_swap = scored_once(daemon)
        produced += await stream
        assert before < at_swap < produced  # the swap came while the stream was being consumed
        produced += await produce(config, range(130, 160), {(DEVICES[2], 150): SPIKE})
        await until(lambda: scored_once(daemon) >= produced, 60, "stream not scored", task)
        assert total(daemon, "streamer_model_swaps_total", role="current") == 1

        registry.rollback()
        await until(lambda: daemon.pipeline.predictor.version == first, 30, "rollback not followed", task)
        produced += await produce(config, range(160, 200), {(DEVICES[3], 190): SPIKE})
        await until(lambda: scored_once(daemon) >= produced, 60, "after rollback not scored", task)
        await asyncio.sleep(0.5)
        assert scored_once(daemon) == produced  # none lost, none scored twice
        assert total(daemon, "streamer_readings_rejected_total") == 0
        assert total(daemon, "streamer_model_swaps_total", role="current") == 2
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0

    opens = sorted((a for a in await alerts_of(config) if a.event == "open"), key=lambda a: a.ts)
    by_version = {(a.device_id, a.model_version) for a in opens}
    assert {(DEVICES[1], first), (DEVICES[2], second), (DEVICES[3], first)} <= by_version
    # One boundary per swap: every alert of the second model lies between the two swaps.
    second_ts = [a.ts for a in opens if a.model_version == second]
    assert all(a.ts < min(second_ts) or a.ts > max(second_ts) for a in opens if a.model_version == first)


async def test_a_candidate_is_scored_in_shadow_and_its_alerts_go_only_to_the_shadow_topic(
    config_factory: Callable[..., Config], tmp_path: Path,
) -> None:
    registry, first = new_registry(tmp_path)
    candidate = registry.add(bundle_variant(tmp_path / "candidate", 6, head_shift=0.02, parity="true")[0])
    config = swap_config(config_factory, registry.root)
    daemon = Application(config, metrics=Metrics())
    task = asyncio.create_task(daemon.run())
    produced = 0
    try:
        await until(lambda: taken_over(daemon), 30, "never took over", task)
        produced += await produce(config, range(0, 60))
        await until(lambda: scored_once(daemon) >= produced, 60, "warm-up not scored", task)
        registry.shadow(candidate)
        await until(lambda: total(daemon, "streamer_model_swaps_total", role="candidate") == 1, 30,
                    "candidate not shadowed", task)
        produced += await produce(config, range(60, 120), {(DEVICES[2], 100): SPIKE})
        await until(lambda: scored_once(daemon) >= produced, 60, "not scored in shadow", task)
        # Both judged every reading after the candidate's warm-up; both flagged the spike.
        assert total(daemon, "streamer_shadow_scored_readings_total") == len(DEVICES) * (120 - 60 - WARMUP)
        assert total(daemon, "streamer_shadow_flags_total", agreement="both") >= 1
        assert total(daemon, "streamer_model_version_info", role="candidate", version=candidate) == 1
        registry.shadow(None)
        await until(lambda: daemon.pipeline.shadow is None, 30, "shadow not stopped", task)
        assert total(daemon, "streamer_model_version_info", role="candidate") == 0
        assert scored_once(daemon) == produced and daemon.pipeline.predictor.version == first
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    alerts = [a for a in await alerts_of(config) if a.event == "open"]
    shadow_alerts = [a for a in await alerts_of(config, config.kafka.shadow_alert_topic) if a.event == "open"]
    assert (DEVICES[2], first) in {(a.device_id, a.model_version) for a in alerts}
    assert (DEVICES[2], candidate) in {(a.device_id, a.model_version) for a in shadow_alerts}
    assert {a.model_version for a in alerts} == {first}  # never a candidate's alert on the alert topic
    assert {a.model_version for a in shadow_alerts} == {candidate}


async def test_a_corrupt_or_incompatible_current_is_refused_and_the_old_model_keeps_scoring(
    config_factory: Callable[..., Config], tmp_path: Path,
) -> None:
    registry, first = new_registry(tmp_path)
    parity = registry.add(bundle_variant(tmp_path / "parity", 2, parity="false")[0])
    channels = registry.add(bundle_variant(tmp_path / "channels", 3, channels=["pressure"])[0])
    corrupt = registry.add(bundle_variant(tmp_path / "corrupt", 4)[0])
    damage_weights(registry.path_of(corrupt))  # damaged on the volume after it was registered
    config = swap_config(config_factory, registry.root)
    daemon = Application(config, metrics=Metrics())
    task = asyncio.create_task(daemon.run())
    produced = 0
    try:
        await until(lambda: taken_over(daemon), 30, "never took over", task)
        produced += await produce(config, range(0, 40))
        await until(lambda: scored_once(daemon) >= produced, 60, "warm-up not scored", task)
        for version, reason in ((parity, "parity"), (channels, "channels"), (corrupt, "unreadable")):
            # Pointed at as an operator editing the volume would (promote itself refuses a damaged bundle).
            (registry.root / "current").write_text(version + "\n")
            await until(refused(daemon, reason), 30, f"{reason} not refused", task)
            assert daemon.pipeline.predictor.version == first
        step = 40
        produced += await produce(config, range(step, step + 40), {(DEVICES[4], step + 30): SPIKE})
        await until(lambda: scored_once(daemon) >= produced, 60, "not scored after refusals", task)
        assert total(daemon, "streamer_model_swaps_total", role="current") == 0
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    assert (DEVICES[4], first) in {(a.device_id, a.model_version) for a in await alerts_of(config)
                                   if a.event == "open"}


def test_a_daemon_killed_during_a_swap_restarts_on_the_registrys_model_with_its_devices_state(
    config_factory: Callable[..., Config], write_config: Callable[[Config, Path], Path], tmp_path: Path,
) -> None:
    registry, _ = new_registry(tmp_path)
    second = registry.add(bundle_variant(tmp_path / "second", 5, head_shift=0.02, parity="true")[0])
    config = swap_config(config_factory, registry.root, state={"snapshot_interval_s": 0.5})
    config_path = write_config(config, tmp_path / "config.yaml")
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "streamer", "run", "--config", str(config_path)],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60

        def wait_for(text: str) -> None:
            while text not in log_path.read_text():
                assert time.monotonic() < deadline and process.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.01)

        wait_for("assigned partitions")  # the daemon created the topics
        produced = asyncio.run(produce(config, range(0, 60)))
        wait_for(f"snapshot round: {len(DEVICES)} devices")
        time.sleep(1.0)  # the readings scored, and snapshot rounds after them
        registry.promote(second)
        wait_for("model swap: preparing")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()

    async def restart() -> None:
        latest = await latest_snapshots(config)
        daemon = Application(config, metrics=Metrics())
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: taken_over(daemon), 30, "restarted daemon never took over", task)
            assert daemon.pipeline.predictor.version == second
            assert daemon.state is not None
            ours = daemon.state.schema.fingerprint
            restored = total(daemon, "streamer_state_restored_devices_total", outcome="restored")
            rebuilt = total(daemon, "streamer_state_restored_devices_total", outcome="rebuilt")
            assert sorted(latest) == DEVICES and restored == len(DEVICES)  # every device kept its history
            # Those last snapshotted under the old model (the kill came before a round under the new
            # one, normally all) rebuilt their forecaster from the ring buffer.
            assert rebuilt == sum(fingerprint != ours for fingerprint in latest.values())
            assert rebuilt > 0 or "model swapped" in log_path.read_text()
            await produce(config, range(60, 100), {(DEVICES[5], 90): SPIKE})
            end = BASE_TS + 99 * INTERVAL_MS
            await until(lambda: all(last_ts(daemon, d) == end for d in DEVICES), 60,
                        "not scored after the restart", task)
            await asyncio.sleep(0.5)
            # Restored devices are past their warm-up: the spike alerts at once, from the new model.
            opens = [a for a in await alerts_of(config) if a.event == "open" and a.device_id == DEVICES[5]]
            assert [a.model_version for a in opens if a.ts >= BASE_TS + 90 * INTERVAL_MS] == [second]
        finally:
            daemon.request_stop()
            assert await asyncio.wait_for(task, 30) == 0

    asyncio.run(restart())
    assert produced == 60 * len(DEVICES)
