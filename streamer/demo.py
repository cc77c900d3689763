"""``streamer demo``: broker, simulator, daemon and a live view in one command.

If no broker answers at ``kafka.bootstrap_servers`` the embedded Tansu broker
is started on loopback. Topics and the consumer group get a fresh suffix per
run, so a demo never reads an earlier run's data. Everything the demo started
is stopped when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from streamer.codec import Alert, decode_alert
from streamer.config import Config
from streamer.embedded_broker import EmbeddedBroker, reachable
from streamer.ground_truth import DetectionReport, match
from streamer.kafka.clients import connection_kwargs, make_producer
from streamer.metrics import Metrics
from streamer.runtime.application import Application
from streamer.simulate import FleetSpec, SimulationStats, simulate

log = logging.getLogger(__name__)

# How long after the last reading to wait for the daemon to finish scoring.
DRAIN_TIMEOUT_S = 15.0
# Alerts for an anomaly count while they arrive this long after its end.
GRACE_READINGS = 20


@dataclass
class DemoOptions:
    """What the demo runs."""

    duration_s: float = 60.0
    devices: int = 200
    rate_hz: float = 10.0
    anomalies: int | None = None  # default: scaled to the run
    seed: int = 7
    live: bool = True


@dataclass
class _AlertLog:
    alerts: list[Alert] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)  # event time -> received here


def demo_config(config: Config, bootstrap: str, *, embedded: bool) -> Config:
    """The config with per-run topics and group, and the demo's broker."""
    run = uuid.uuid4().hex[:8]
    kafka = config.kafka
    kafka = msgspec.structs.replace(
        kafka,
        bootstrap_servers=bootstrap,
        group_id=f"{kafka.group_id}-demo-{run}",
        input_topic=f"demo-{run}-{kafka.input_topic}",
        alert_topic=f"demo-{run}-{kafka.alert_topic}",
        dead_letter_topic=f"demo-{run}-{kafka.dead_letter_topic}",
        feedback_topic=f"demo-{run}-{kafka.feedback_topic}",
        create_topics=True,
        # Tansu 0.6 rejects the InitProducerId request aiokafka sends for
        # idempotence; acks=all still holds on the embedded broker.
        idempotent_producer=kafka.idempotent_producer and not embedded,
    )
    metrics = msgspec.structs.replace(config.metrics, port=0)
    return msgspec.structs.replace(config, kafka=kafka, metrics=metrics)


async def run_demo(config: Config, options: DemoOptions, console: Console | None = None) -> dict[str, Any]:
    """Run the demo and return its summary (see README: demo summary)."""
    console = console or Console(stderr=True)
    embedded = not reachable(config.kafka.bootstrap_servers)
    broker: EmbeddedBroker | None = None
    if embedded:
        broker = EmbeddedBroker()
        bootstrap = broker.start()
        console.print(f"[bold]no broker at {config.kafka.bootstrap_servers}[/]: "
                      f"started the embedded Tansu broker on {bootstrap}")
    else:
        bootstrap = config.kafka.bootstrap_servers
    try:
        return await _run(demo_config(config, bootstrap, embedded=embedded), options, console,
                          "embedded" if embedded else "external")
    finally:
        if broker is not None:
            broker.stop()


async def _run(config: Config, options: DemoOptions, console: Console, broker_kind: str) -> dict[str, Any]:
    kafka = config.kafka
    metrics = Metrics()
    daemon = Application(config, metrics=metrics)
    daemon_task = asyncio.create_task(daemon.run(), name="daemon")
    await _wait_ready(daemon, daemon_task)

    alert_log = _AlertLog()
    reader = asyncio.create_task(_read_alerts(config, alert_log), name="alert-reader")
    spec = FleetSpec(
        devices=options.devices,
        rate_hz=options.rate_hz,
        channels=tuple(config.readings.channels),
        seed=options.seed,
        anomalies=options.anomalies if options.anomalies is not None
        else _default_anomalies(options),
    )
    stats = SimulationStats()
    producer = make_producer(kafka)
    await producer.start()
    started = time.monotonic()
    try:
        sim = asyncio.create_task(simulate(producer, kafka.input_topic, spec, options.duration_s,
                                           stats=stats), name="simulator")
        with _live_view(console, options.live) as live:
            while not sim.done():
                await asyncio.sleep(0.5)
                if live is not None:
                    live.update(_view(metrics, stats, alert_log, spec, time.monotonic() - started))
            await sim
            await _drain(metrics, stats, daemon_task)
            if live is not None:
                live.update(_view(metrics, stats, alert_log, spec, time.monotonic() - started))
    finally:
        await producer.stop()
        daemon.request_stop()
        exit_code = await daemon_task
        await asyncio.sleep(1.0)  # the last alerts' trip to the reader
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    interval_ms = 1000.0 / options.rate_hz
    report = match(stats.truth, alert_log.alerts, grace_ms=round(GRACE_READINGS * interval_ms))
    return _summary(metrics, stats, report, alert_log, options, broker_kind, exit_code,
                    time.monotonic() - started)


def _default_anomalies(options: DemoOptions) -> int:
    # About one anomaly per device per two minutes, at least 30 so that the
    # detection rates mean something.
    return max(30, round(options.devices * options.duration_s / 120.0))


async def _wait_ready(daemon: Application, task: asyncio.Task[int], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not daemon.health.is_ready()[0]:
        if task.done():
            raise RuntimeError(f"daemon exited during start (code {task.result()})")
        if time.monotonic() > deadline:
            raise TimeoutError("daemon did not get a partition assignment in time")
        await asyncio.sleep(0.1)


async def _read_alerts(config: Config, alert_log: _AlertLog) -> None:
    consumer = AIOKafkaConsumer(
        config.kafka.alert_topic,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
        **connection_kwargs(config.kafka),
    )
    await consumer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            now_ms = time.time() * 1000.0
            for records in batches.values():
                for record in records:
                    alert = decode_alert(record.value)
                    alert_log.alerts.append(alert)
                    if alert.event == "open":
                        alert_log.latency_ms.append(now_ms - alert.ts)
    finally:
        await consumer.stop()


async def _drain(metrics: Metrics, stats: SimulationStats, daemon_task: asyncio.Task[int]) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline and not daemon_task.done():
        handled = _value(metrics, "streamer_readings_scored_total") + _value(
            metrics, "streamer_readings_warmup_total") + _rejected(metrics)
        if handled >= stats.readings_sent:
            return
        await asyncio.sleep(0.2)
    log.warning("daemon had not handled every reading %.0fs after the simulator stopped",
                DRAIN_TIMEOUT_S)


def _value(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.registry.get_sample_value(name, labels or {}) or 0.0


def _rejected(metrics: Metrics) -> float:
    return sum(sample.value for family in metrics.rejected.collect() for sample in family.samples
               if sample.name.endswith("_total"))


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    array = np.asarray(values)
    return {"p50": round(float(np.percentile(array, 50)), 2),
            "p99": round(float(np.percentile(array, 99)), 2),
            "max": round(float(array.max()), 2)}


def _summary(metrics: Metrics, stats: SimulationStats, report: DetectionReport, alert_log: _AlertLog,
             options: DemoOptions, broker_kind: str, exit_code: int, seconds: float) -> dict[str, Any]:
    decision = metrics.event_to_decision
    p50, p99 = decision.quantile(0.5), decision.quantile(0.99)
    return {
        "readings_sent": stats.readings_sent,
        "readings_scored": int(_value(metrics, "streamer_readings_scored_total")),
        "readings_warmup": int(_value(metrics, "streamer_readings_warmup_total")),
        "readings_rejected": int(_rejected(metrics)),
        "injected": report.injected,
        "detected": report.detected,
        "detection_rate": {kind: round(rate, 3) for kind in report.injected
                           if (rate := report.rate(kind)) is not None},
        "false_alerts": report.false_alerts,
        "alerts_opened": report.alerts,
        "latency_ms": {**_percentiles(alert_log.latency_ms), "count": len(alert_log.latency_ms),
                       "measured": "event timestamp -> alert received by a subscriber"},
        "decision_latency_ms": {
            "p50": None if p50 is None else round(p50 * 1000, 2),
            "p99": None if p99 is None else round(p99 * 1000, 2),
            "measured": "event timestamp -> scoring decision, every reading (histogram estimate)",
        },
        "devices": options.devices,
        "rate_hz_per_device": options.rate_hz,
        "duration_s": round(seconds, 1),
        "broker": broker_kind,
        "daemon_exit_code": exit_code,
        "machine": f"{platform.machine()} {platform.system()} python {platform.python_version()}",
    }


@contextlib.contextmanager
def _live_view(console: Console, enabled: bool) -> Iterator[Live | None]:
    if not enabled or not console.is_terminal:
        yield None
        return
    with Live(Table(), console=console, refresh_per_second=4, transient=False) as live:
        yield live


_last_rate: dict[str, float] = {}


def _view(metrics: Metrics, stats: SimulationStats, alert_log: _AlertLog, spec: FleetSpec,
          elapsed: float) -> Table:
    consumed = _value(metrics, "streamer_readings_consumed_total")
    previous_t = _last_rate.get("t", 0.0)
    previous_n = _last_rate.get("n", 0.0)
    rate = (consumed - previous_n) / (elapsed - previous_t) if elapsed > previous_t else 0.0
    _last_rate.update(t=elapsed, n=consumed)
    now_ms = time.time() * 1000
    started = [t for t in stats.truth if t.start_ts <= now_ms]
    report = match(started, alert_log.alerts, grace_ms=round(GRACE_READINGS * 1000 / spec.rate_hz))
    p50 = metrics.event_to_decision.quantile(0.5)
    p99 = metrics.event_to_decision.quantile(0.99)
    table = Table(title=f"streamer demo — {elapsed:5.1f}s", show_header=False)
    table.add_row("readings/s", f"{rate:,.0f}")
    table.add_row("readings sent / scored", f"{stats.readings_sent:,} / "
                  f"{_value(metrics, 'streamer_readings_scored_total'):,.0f}")
    table.add_row("devices (warming up)", f"{_value(metrics, 'streamer_devices_tracked'):,.0f} "
                  f"({_value(metrics, 'streamer_devices_warming_up'):,.0f})")
    table.add_row("event→decision p50 / p99",
                  "-" if p50 is None or p99 is None else f"{p50 * 1000:.1f} ms / {p99 * 1000:.1f} ms")
    for kind, injected in report.injected.items():
        table.add_row(f"  {kind}", f"{report.detected.get(kind, 0)} / {injected} detected")
    table.add_row("false alerts", str(report.false_alerts))
    return table
