"""Operator feedback on the real broker: it changes the next decisions of the device it names, and no other.

One daemon (in process) scores a fleet; feedback is written to the feedback
topic as any Kafka client would (and a pattern mute with ``streamer
feedback``). A mute (by id and by pattern) and a false alarm change what the
named device alerts next, and not its neighbours'; duplicate and hostile
messages are counted and dead-lettered; after a restart the new daemon
restores the adjustments with the devices' state and applies nothing twice;
then unmute, new_normal and missed each change their own device's next
decisions. (Restore across a rebalance: tests/integration/test_state_handover.py.)
"""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from streamer.codec import Alert
from streamer.config import Config, FeedbackConfig, RecordGateConfig
from streamer.feedback.messages import encode_feedback, feedback_key, new_feedback
from streamer.metrics import Metrics
from streamer.runtime.application import Application
from tests.integration.daemons import (
    BASE_TS,
    INTERVAL_MS,
    alerts_of,
    produce_fleet,
    read_topic,
    taken_over,
    total,
    until,
)

pytestmark = pytest.mark.integration

DEVICES = [f"fb-{i:02d}" for i in range(6)]
WARMUP = 20
SPIKE = 8.0  # far above the noise, yet a finite surprise (a score below 1)
BUMP = 3.0  # a surprise of 7-10 at the steps used: under the method's bar (14.4), over a quarter of it
SHIFT = 6.0  # a level shift
# Readings of this test's fleet (tests.integration.daemons.produce_fleet).
produce = functools.partial(produce_fleet, devices=DEVICES)


async def send_feedback(config: Config, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for key, data in records:
            await producer.send_and_wait(config.kafka.feedback_topic, data, key=key)
    finally:
        await producer.stop()


def handled(daemon: Application) -> float:
    return sum(total(daemon, f"streamer_readings_{what}_total") for what in ("scored", "warmup", "rejected"))


def opened(alerts: list[Alert], first_step: int) -> set[str]:
    return {a.device_id for a in alerts if a.event == "open" and a.ts >= BASE_TS + first_step * INTERVAL_MS}


def cli_feedback(config: Config, path: Path, write_config: Callable[[Config, Path], Path],
                 *args: str) -> None:
    """``streamer feedback ARGS`` as an operator would run it."""
    config_path = write_config(config, path)
    subprocess.run([sys.executable, "-m", "streamer", "feedback", *args, "--config", str(config_path)],
                   check=True, capture_output=True, timeout=60)


async def test_feedback_changes_the_named_devices_decisions_and_survives_a_restart(
    config_factory: Callable[..., Config], write_config: Callable[[Config, Path], Path], tmp_path: Path,
) -> None:
    config = config_factory(
        thresholds={"warmup": WARMUP, "record_gate": RecordGateConfig(enabled=False)},
        # Any false alarm's bar may rise as high as needed: the spikes repeat at one size.
        feedback=msgspec.structs.asdict(FeedbackConfig(margin=1.0, max_factor=1e9, min_factor=0.25)),
        alerts={"resolve_after": 5},
        state={"snapshot_interval_s": 1.0},
        metrics={"enabled": False},
    )
    muted, answered, neighbour, pattern_muted = DEVICES[1], DEVICES[2], DEVICES[4], DEVICES[5]
    produced = 0

    daemon = Application(config, metrics=Metrics())
    task = asyncio.create_task(daemon.run())
    try:
        # Before the first reading: the daemon creates the topics (the broker would with its own defaults).
        await until(lambda: taken_over(daemon), 30, "never took over", task)
        produced += await produce(config, range(0, 60))
        await until(lambda: handled(daemon) >= produced, 60, "warm-up not scored", task)
        # A false alarm on one device; a mute of another.
        produced += await produce(config, range(60, 80), {(answered, 65): SPIKE})
        await until(lambda: handled(daemon) >= produced, 30, "spike not scored", task)
        await asyncio.sleep(0.5)
        (alert,) = [a for a in await alerts_of(config) if a.device_id == answered and a.event == "open"]
        false_alarm = new_feedback("false_alarm", device_id=answered, alert_id=alert.alert_id, author="test")
        mute = new_feedback("mute", device_id=muted, until_ts=BASE_TS + 10**9, reason="maintenance")
        hostile: list[tuple[bytes | None, bytes]] = [
            (muted.encode(), b"{not json"),
            (b"nobody", encode_feedback(new_feedback("unmute", device_id="nobody"))),
            (answered.encode(), encode_feedback(new_feedback(
                "false_alarm", device_id=answered, alert_id="55ee746e-bf48-57ad-90b6-4e27698229ad"))),
            (b"someone-else", encode_feedback(new_feedback("unmute", device_id=muted))),
        ]
        duplicate = (feedback_key(false_alarm), encode_feedback(false_alarm))
        await send_feedback(config, [duplicate, (feedback_key(mute), encode_feedback(mute)), duplicate,
                                     *hostile])
        # A pattern mute from the command line: one copy per partition, applied where the device lives.
        await asyncio.to_thread(cli_feedback, config, tmp_path / "cli.yaml", write_config, "mute",
                                "--pattern", "fb-0[5]", "--until", "+1d", "--reason", "maintenance")
        partitions = config.kafka.topic_partitions
        await until(lambda: total(daemon, "streamer_feedback_applied_total") == 2 + partitions
                    and total(daemon, "streamer_feedback_rejected_total") == 5, 30, "feedback not applied",
                    task)
        assert total(daemon, "streamer_feedback_applied_total", kind="false_alarm") == 1
        assert total(daemon, "streamer_feedback_applied_total", kind="mute") == 1 + partitions
        rejected = {reason: total(daemon, "streamer_feedback_rejected_total", reason=reason)
                    for reason in ("duplicate_feedback", "malformed_json", "unknown_device", "unknown_alert",
                                   "key_mismatch")}
        assert rejected == dict.fromkeys(rejected, 1.0)

        # The same spike on the answered, the muted (by id and by pattern) and a neighbouring device:
        # only the neighbour alerts.
        # A bump on a fourth device is under the method's bar: no alert (until it is reported missed).
        spikes = {(answered, 85): SPIKE, (muted, 85): SPIKE, (neighbour, 85): SPIKE,
                  (pattern_muted, 85): SPIKE, (DEVICES[3], 88): BUMP}
        produced += await produce(config, range(80, 100), spikes)
        await until(lambda: handled(daemon) >= produced, 30, "second spikes not scored", task)
        await asyncio.sleep(0.5)
        assert opened(await alerts_of(config), 80) == {neighbour}
        assert total(daemon, "streamer_suppressed_flags_total", reason="mute") >= 1
        assert total(daemon, "streamer_suppressed_flags_total", reason="feedback") >= 1
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0

    letters = [json.loads(value) for value in await read_topic(config, config.kafka.dead_letter_topic)]
    feedback_letters = [letter for letter in letters if letter["source_topic"] == config.kafka.feedback_topic]
    assert sorted(letter["reason"] for letter in feedback_letters) == sorted(rejected)

    # A new daemon restores the devices with their adjustments, and applies no feedback again.
    restarted = Application(config, metrics=Metrics())
    task = asyncio.create_task(restarted.run())
    try:
        await until(lambda: total(restarted, "streamer_state_restored_devices_total", outcome="restored")
                    == len(DEVICES), 60, "devices not restored", task)
        spikes = {(answered, 105): SPIKE, (muted, 105): SPIKE, (neighbour, 105): SPIKE,
                  (pattern_muted, 105): SPIKE}
        produced_now = await produce(config, range(100, 120), spikes)
        await until(lambda: handled(restarted) >= produced_now, 30, "spikes after the restart not scored",
                    task)
        await asyncio.sleep(0.5)
        assert opened(await alerts_of(config), 100) == {neighbour}
        await asyncio.sleep(1.0)  # time for the follower to read anything left uncommitted
        assert total(restarted, "streamer_feedback_applied_total") == 0
        assert total(restarted, "streamer_feedback_rejected_total") == 0

        # The other kinds, each on its own device: unmute, new_normal (from the time a level
        # shift begins) and missed (three reports: the bar down to min_factor).
        renewed, missed = DEVICES[0], DEVICES[3]
        step_ts = [BASE_TS + step * INTERVAL_MS for step in range(200)]
        kinds = [new_feedback("unmute", device_id=muted),
                 new_feedback("new_normal", device_id=renewed, from_ts=step_ts[135]),
                 *[new_feedback("missed", device_id=missed, start_ts=step_ts[s], end_ts=step_ts[s])
                   for s in (60, 61, 62)]]
        await send_feedback(config, [(feedback_key(m), encode_feedback(m)) for m in kinds])
        await until(lambda: total(restarted, "streamer_feedback_applied_total") == len(kinds), 30,
                    "feedback after the restart not applied", task)
        changes = {(muted, 125): SPIKE, (missed, 151): BUMP,
                   **{(device, step): SHIFT for device in (renewed, neighbour) for step in range(135, 170)}}
        produced_now += await produce(config, range(120, 170), changes)
        await until(lambda: handled(restarted) >= produced_now, 30, "the last readings not scored", task)
        await asyncio.sleep(0.5)
        # The unmuted device alerts again, the missed one alerts on a bump it ignored before, and
        # the level shift is news for the neighbour only.
        assert opened(await alerts_of(config), 120) == {muted, missed, neighbour}
    finally:
        restarted.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


