"""``streamer alertmanager`` as a real process between the real broker and a real Alertmanager.

Alert events are produced to the alert topic as the daemon writes them
(``encode_alert``, keyed by device id); the last test runs the daemon itself
on readings with a spike, end to end. Alertmanager (Debian's 0.25,
clustering off) routes every alert to a webhook served by the test, grouped
by ``alert_id`` with no wait, so each firing and each resolve shows up as a
notification. Resends run every 0.5 s with endsAt 2 s ahead: an alert that
stays active for longer than that was resent.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streamer.alerts.episodes import alert_id
from streamer.codec import Alert, encode_alert, encode_reading
from streamer.config import Config
from streamer.embedded_broker import free_port
from streamer.kafka.clients import ensure_topics
from streamer.metrics import Metrics
from streamer.runtime.application import Application
from tests.conftest import AlertmanagerFactory, AlertmanagerServer

pytestmark = pytest.mark.integration

RESEND_S = 0.5
MODEL = "lstm-test"


class Webhook:
    """Records the notifications Alertmanager sends (one JSON document per POST)."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server calls
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.notifications.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # http.server's name
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def statuses(self, episode: str) -> list[str]:
        """The status of ``episode`` in each notification that named it, in arrival order."""
        with self.lock:
            return [alert["status"] for note in self.notifications for alert in note["alerts"]
                    if alert["labels"].get("alert_id") == episode]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    thread = threading.Thread(target=hook.httpd.serve_forever, daemon=True)
    thread.start()
    yield hook
    hook.httpd.shutdown()
    hook.httpd.server_close()


@pytest.fixture
def alertmanager(alertmanager_factory: AlertmanagerFactory, webhook: Webhook) -> AlertmanagerServer:
    return alertmanager_factory({
        "route": {"receiver": "webhook", "group_by": ["alert_id"], "group_wait": "0s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook.url, "send_resolved": True}]}],
    })


class Bridges:
    """``streamer alertmanager`` processes of one scenario (killed at teardown)."""

    def __init__(self, config_path: Path, workdir: Path) -> None:
        self.config_path = config_path
        self.workdir = workdir
        self.running: list[tuple[subprocess.Popen[bytes], int]] = []

    def start(self, url: str) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        log_file = (self.workdir / f"bridge-{len(self.running)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "streamer", "alertmanager", "--config", str(self.config_path),
             "--url", url, "--metrics-port", str(port), "--dashboard-url",
             "https://grafana.example/d/devices?var-device={device}"],
            stdout=log_file, stderr=subprocess.STDOUT, env=os.environ.copy())
        log_file.close()
        self.running.append((process, port))
        wait_until(lambda: scrape(port) is not None, 60, "the bridge never served /metrics", process)
        return process, port

    def log(self, index: int) -> str:
        return (self.workdir / f"bridge-{index}.log").read_text(errors="replace")[-4000:]


@pytest.fixture
def scenario(config_factory: Callable[..., Config], write_config: Callable[[Config, Path], Path],
             tmp_path: Path) -> Iterator[tuple[Config, Bridges]]:
    config = config_factory(alertmanager={"resend_interval_s": RESEND_S, "backoff_initial_s": 0.05,
                                          "backoff_max_s": 0.5, "timeout_s": 2.0},
                            # A killed bridge holds its partitions until its session times out.
                            kafka={"session_timeout_ms": 4000, "heartbeat_interval_ms": 1000})
    asyncio.run(ensure_topics(config.kafka, [config.kafka.alert_topic]))
    bridges = Bridges(write_config(config, tmp_path / "config.yaml"), tmp_path)
    yield config, bridges
    for process, _ in bridges.running:
        if process.poll() is None:
            process.kill()
            process.wait()


def episode(device: str) -> tuple[str, int]:
    start = int(time.time() * 1000)
    return alert_id(device, start, MODEL), start


def event(episode_id: str, start: int, kind: Literal["open", "update", "resolve"], device: str,
          score: float = 0.995, **extra: Any) -> bytes:
    alert = Alert(alert_id=episode_id, event=kind, device_id=device,
                  ts=start + (5000 if kind == "resolve" else 0), episode_start_ts=start, channel="value",
                  actual=18.98, forecast=9.16, residual=9.82, smoothed_residual=6.34, threshold=3.99,
                  score=score, method="zscore", model_version=MODEL, processing_ms=0.3, latency_ms=21.4)
    encoded = encode_alert(alert)
    if not extra:
        return encoded
    return json.dumps({**json.loads(encoded), **extra}).encode()


async def produce(config: Config, records: list[tuple[str, bytes]]) -> dict[int, int]:
    """Produce ``(device, value)`` records keyed by device; the end offset of each partition written."""
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all")
    await producer.start()
    ends: dict[int, int] = {}
    try:
        for device, value in records:
            metadata = await producer.send_and_wait(config.kafka.alert_topic, value, key=device.encode())
            ends[metadata.partition] = max(ends.get(metadata.partition, 0), metadata.offset + 1)
    finally:
        await producer.stop()
    return ends


async def committed(config: Config, partitions: list[int]) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers,
                                group_id=f"{config.kafka.group_id}-alertmanager", enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(config.kafka.alert_topic, p)) for p in partitions}
    finally:
        await consumer.stop()


def scrape(port: int) -> dict[str, float] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + "".join(f":{v}" for _, v in sorted(sample.labels.items()))
            values[key] = sample.value
    return values


def metric(port: int, key: str) -> float:
    return (scrape(port) or {}).get(key, 0.0)


def wait_until(condition: Callable[[], bool], timeout_s: float, message: str,
               *processes: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"{message}: the bridge exited with {process.returncode}")
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(message)


def active(am: AlertmanagerServer) -> dict[str, dict[str, Any]]:
    """Alertmanager's active alerts by alert_id."""
    return {alert["labels"]["alert_id"]: alert for alert in am.alerts(active="true")
            if alert["status"]["state"] == "active"}


def test_episodes_fire_resolve_and_stay_firing_while_resent(
        scenario: tuple[Config, Bridges], alertmanager: AlertmanagerServer, webhook: Webhook) -> None:
    config, bridges = scenario
    process, port = bridges.start(alertmanager.url)
    (a, a_start), (b, b_start) = episode("pump-1"), episode("pump-2")
    drivers = [{"channel": "value", "actual": 18.98, "forecast": 9.16, "residual": 9.82, "share": 1.0}]
    asyncio.run(produce(config, [("pump-1", event(a, a_start, "open", "pump-1")),
                                 ("pump-2", event(b, b_start, "open", "pump-2", score=0.95, drivers=drivers)),
                                 ("pump-3", b"{not an alert")]))
    wait_until(lambda: {a, b} <= set(active(alertmanager)), 30, "the episodes never fired", process)
    alert = active(alertmanager)[a]
    assert alert["labels"] == {"alertname": "StreamerAnomaly", "alert_id": a, "device": "pump-1",
                               "channel": "value", "severity": "critical", "model_version": MODEL}
    notes = alert["annotations"]
    assert (notes["actual"], notes["forecast"], notes["residual"]) == ("18.98", "9.16", "9.82")
    assert (notes["score"], notes["threshold"], notes["method"], notes["dedup_key"]) == (
        "0.995", "3.99", "zscore", a)
    assert notes["dashboard"] == alert["generatorURL"] == \
        "https://grafana.example/d/devices?var-device=pump-1"
    assert "drivers" not in notes
    other = active(alertmanager)[b]
    assert other["labels"]["severity"] == "warning"
    assert other["annotations"]["drivers"] == "value 100% (actual 18.98, forecast 9.16)"
    wait_until(lambda: "firing" in webhook.statuses(a), 30, "no firing notification", process)

    ends = asyncio.run(produce(config, [("pump-1", event(a, a_start, "resolve", "pump-1"))]))
    wait_until(lambda: a not in active(alertmanager), 30, "the resolve never reached Alertmanager", process)
    wait_until(lambda: "resolved" in webhook.statuses(a), 30, "no resolved notification", process)
    # b's endsAt lies 2 s ahead of each post; still active after 6 more resends means resent.
    resent = metric(port, "streamer_alertmanager_alerts_posted_total:resend")
    wait_until(lambda: metric(port, "streamer_alertmanager_alerts_posted_total:resend") >= resent + 6, 30,
               "no resends", process)
    assert b in active(alertmanager)
    assert webhook.statuses(b) == ["firing"]  # resends do not notify again

    values = scrape(port) or {}
    assert values["streamer_alertmanager_alerts_posted_total:open"] == 2
    assert values["streamer_alertmanager_alerts_posted_total:resolve"] == 1
    assert values["streamer_alertmanager_records_rejected_total:malformed_json"] == 1
    assert values["streamer_alertmanager_firing_episodes"] == 1
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0, bridges.log(0)
    # Offsets: a's partition is done to its end; b's holds at b's open (it still fires).
    offsets = asyncio.run(committed(config, list(range(config.kafka.topic_partitions))))
    a_partition = next(iter(ends))
    assert offsets[a_partition] == ends[a_partition]


def test_a_killed_bridge_loses_nothing_and_its_successor_keeps_the_episodes_firing(
        scenario: tuple[Config, Bridges], alertmanager: AlertmanagerServer) -> None:
    config, bridges = scenario
    first, _ = bridges.start(alertmanager.url)
    devices = [f"pump-{i}" for i in range(6)]
    episodes = {device: episode(device) for device in devices}
    asyncio.run(produce(config, [(d, event(*episodes[d], "open", d)) for d in devices]))
    ids = {episodes[d][0] for d in devices}
    wait_until(lambda: ids <= set(active(alertmanager)), 30, "the episodes never fired", first)
    first.send_signal(signal.SIGKILL)
    first.wait(10)

    # While no bridge runs: half the episodes resolve, a new one opens.
    resolved = devices[:3]
    late_device = "pump-late"
    late = episode(late_device)
    asyncio.run(produce(config, [*[(d, event(*episodes[d], "resolve", d)) for d in resolved],
                                 (late_device, event(*late, "open", late_device))]))
    second, port = bridges.start(alertmanager.url)
    still_firing = {episodes[d][0] for d in devices[3:]} | {late[0]}
    gone = {episodes[d][0] for d in resolved}
    wait_until(lambda: set(active(alertmanager)) == still_firing, 30,
               "the successor did not deliver the rest", second)
    # endsAt is 2 s ahead: active after 6 more resends means the successor resends
    # the episodes that opened before the crash (rebuilt from the held-back offsets).
    resent = metric(port, "streamer_alertmanager_alerts_posted_total:resend")
    wait_until(lambda: metric(port, "streamer_alertmanager_alerts_posted_total:resend") >= resent + 6 * 4,
               30, "no resends", second)
    assert set(active(alertmanager)) == still_firing
    assert metric(port, "streamer_alertmanager_firing_episodes") == len(still_firing)
    assert not gone & set(active(alertmanager))


def test_an_alertmanager_outage_delays_but_loses_nothing(
        scenario: tuple[Config, Bridges], alertmanager: AlertmanagerServer, webhook: Webhook) -> None:
    config, bridges = scenario
    process, port = bridges.start(alertmanager.url)
    (a, a_start), (b, b_start), (c, c_start) = episode("pump-1"), episode("pump-2"), episode("pump-3")
    asyncio.run(produce(config, [("pump-1", event(a, a_start, "open", "pump-1")),
                                 ("pump-2", event(b, b_start, "open", "pump-2"))]))
    wait_until(lambda: {a, b} <= set(active(alertmanager)), 30, "the episodes never fired", process)
    wait_until(lambda: "firing" in webhook.statuses(a), 30, "no firing notification", process)

    alertmanager.stop()  # its alerts live in memory: a restart forgets them
    ends = asyncio.run(produce(config, [("pump-1", event(a, a_start, "resolve", "pump-1")),
                                        ("pump-3", event(c, c_start, "open", "pump-3"))]))
    wait_until(lambda: metric(port, "streamer_alertmanager_post_failures_total:unreachable") >= 2, 30,
               "the bridge did not notice the outage", process)
    retries = metric(port, "streamer_alertmanager_retries_total")
    assert retries >= 1
    offsets = asyncio.run(committed(config, list(ends)))
    assert all((offsets[p] or 0) < end for p, end in ends.items())  # nothing past the outage

    alertmanager.start()  # same port, same storage (its notification log)
    wait_until(lambda: set(active(alertmanager)) == {b, c}, 30,
               "the firing set was not delivered after the restart", process)
    # The resolve reached the restarted Alertmanager (its own counter starts at 0) ...
    wait_until(lambda: alertmanager.metric("alertmanager_alerts_received_total", status="resolved",
                                                  version="v2") >= 1, 30,
               "the resolve was lost", process)
    # ... and, with its notification log kept, it tells the receiver that a is over.
    wait_until(lambda: "resolved" in webhook.statuses(a), 30, "no resolved notification for a", process)
    wait_until(lambda: metric(port, "streamer_alertmanager_alerts_posted_total:resolve") == 1
               and metric(port, "streamer_alertmanager_alerts_posted_total:open") == 3, 30,
               "the bridge did not count the delivery", process)


# ------------------------------------------------------------ with the daemon
DEVICES = [f"am-{i}" for i in range(4)]
BASE_TS = 1_700_000_000_000


async def produce_readings(config: Config, steps: range, spike: tuple[str, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        for step in steps:
            for d, device in enumerate(DEVICES):
                value = 10.0 + d + math.sin(step / 5.0 + d) + (30.0 if (device, step) == spike else 0.0)
                reading = encode_reading(device, BASE_TS + step * 100, value)
                await producer.send(config.kafka.input_topic, reading, key=device.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def test_an_anomaly_the_daemon_detects_fires_in_alertmanager_and_resolves(
        config_factory: Callable[..., Config], write_config: Callable[[Config, Path], Path], tmp_path: Path,
        alertmanager: AlertmanagerServer, webhook: Webhook) -> None:
    config = config_factory(alertmanager={"resend_interval_s": RESEND_S, "backoff_initial_s": 0.05,
                                          "backoff_max_s": 0.5, "timeout_s": 2.0},
                            thresholds={"warmup": 20}, alerts={"resolve_after": 5},
                            metrics={"enabled": False})
    await ensure_topics(config.kafka, [config.kafka.input_topic, config.kafka.alert_topic])
    bridges = Bridges(write_config(config, tmp_path / "config.yaml"), tmp_path)
    daemon = Application(config, metrics=Metrics())
    task = asyncio.create_task(daemon.run())
    try:
        process, _ = await asyncio.to_thread(bridges.start, alertmanager.url)
        # Up to two readings past a spike on one device: its episode opens and stays open.
        await produce_readings(config, range(0, 62), spike=(DEVICES[2], 60))
        await asyncio.to_thread(wait_until, lambda: len(active(alertmanager)) == 1, 60,
                                "the daemon's alert never fired in Alertmanager", process)
        assert not task.done()
        ((episode_id, alert),) = active(alertmanager).items()
        assert alert["labels"] == {"alertname": "StreamerAnomaly", "alert_id": episode_id,
                                   "device": DEVICES[2], "channel": "value", "severity": "critical",
                                   "model_version": daemon.pipeline.predictor.version}
        notes = alert["annotations"]
        assert notes["dedup_key"] == episode_id
        assert notes["method"] == "zscore"
        assert notes["drivers"].startswith("value 100%")
        assert notes["feedback"] == (f"streamer feedback false-alarm --device {DEVICES[2]} "
                                     f"--alert-id {episode_id}")
        # Calm readings: the episode resolves, and so does the alert.
        await produce_readings(config, range(62, 80), spike=("", -1))
        await asyncio.to_thread(wait_until, lambda: not active(alertmanager), 60,
                                "the resolve never reached Alertmanager", process)
        await asyncio.to_thread(wait_until, lambda: webhook.statuses(episode_id) == ["firing", "resolved"],
                                30, "no firing and resolved notifications", process)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
        for running, _ in bridges.running:
            running.kill()
            running.wait()
