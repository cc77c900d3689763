"""``streamer bench e2e``: one daemon process against the broker on loopback, next to two reference paths.

One run, one machine, in this order (each step has the machine to itself,
apart from the broker):

1. **Backlog**: ``devices x backlog_steps`` readings of a synthetic fleet
   (:class:`~streamer.lab.bench.fleet.SignalFleet`, event times in the past).
2. **Raw path** (:mod:`streamer.lab.bench.e2e_paths` ``raw``): aiokafka consuming
   and decoding the backlog with the daemon's consumer settings and decoder,
   nothing else: the upper bound for one consumer process. It runs again
   after step 5, and its rate is the mean of the two, so the bound brackets
   the daemon's drain in time (the machine's speed drifts).
3. **Naive path** (``naive``): a per-reading Keras ``predict()`` over each
   device's last ``window`` readings, as a tutorial's real-time predictor
   does, timed for a bounded span.
4. **Daemon drain**: ``streamer run`` (a subprocess started as an operator
   starts it) consumes the same backlog. A backlog drains at the daemon's
   highest rate; that rate is the highest input rate its lag stays bounded
   at (faster input grows the lag, slower shrinks it), measured the same way
   as the raw path, so the two compare directly.
5. **Sustained ladder**: the same daemon under live input at fractions of
   the drain rate; the highest rate with bounded lag is
   ``sustained_max_readings_per_s``. The generator shares the machine, so on
   few cores it, not the daemon, may be what stops the ladder
   (``achieved_per_s`` below ``target_per_s``).
6. **Fixed loads** (1K, 10K, 50K readings/s by default), each on a fresh
   topic with a fresh daemon warmed by a backlog (see :func:`_latency_phase`):
   the generator produces live readings at the rate while the daemon scores
   them; a subscriber (a separate process) records when each alert arrives,
   and when a sample of the input readings reaches it: the broker floor, the
   latency of any consumer at all on this broker at this load. Spikes are
   injected at about ``alerts_per_s`` per second whatever the load, so every
   load has alerts to time and the same publishing work.

Lag is bounded at a load when, at the end of its window, the daemon is less
than :data:`LAG_SLACK_S` seconds of input behind: a daemon slower than its
input falls further behind every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from streamer.config import Config, write_config_file
from streamer.kafka.clients import ensure_topics
from streamer.lab.bench.daemon import (
    CONSUME_TO_DECISION,
    EVENT_TO_ALERT,
    EVENT_TO_DECISION,
    RESTORE,
    SCORING_PAUSE,
    SNAPSHOT_ROUND,
    DaemonProcess,
    Sample,
    cpu_percent,
    span_rate,
)
from streamer.lab.bench.fleet import SignalFleet
from streamer.lab.bench.load import LoadGenerator, make_load_producer
from streamer.lab.bench.machine import load_average, machine_busy_seconds, machine_record, process_cpu_seconds
from streamer.lab.bench.runs import (
    BenchFailedError,
    Broker,
    Drain,
    Progress,
    bench_config,
    run_id,
    scrape,
    wait_handled,
    with_group,
)

# A load's lag is bounded if, at the end of its window, the daemon is less than this much input behind.
LAG_SLACK_S = 0.5
LAG_FLOOR = 1_000  # readings: one fetch in flight is not lag
# Spike probability ceiling: at low rates, alerts_per_s would need most readings to be spikes.
MAX_SPIKE_PROBABILITY = 0.05
# Spikes in the backlog: rare, so the drain also exercises the publishing path.
BACKLOG_SPIKE_PROBABILITY = 1e-4
BACKLOG_INTERVAL_MS = 1_000
# A load's latency comes from the alert subscriber when it saw at least this many alerts,
# else from the daemon's own event->alert histogram.
MIN_LATENCY_SAMPLES = 20
# Between loads: let the daemon finish what was sent before the next load starts.
SETTLE_TIMEOUT_S = 60.0
LOAD_SAMPLE_S = 0.5
SUBSCRIBER_READY_TIMEOUT_S = 60.0
# The targets for one daemon process (2-core development machine).
TARGET_VS_RAW = 0.5
TARGET_VS_NAIVE = 1000.0
TARGET_P99_MS = 20.0
TARGET_P99_LOAD = 10_000
# The budget for the longest scoring pause at 100K devices.
PAUSE_BUDGET_S = 0.02


@dataclass(frozen=True)
class E2EOptions:
    """What ``streamer bench e2e`` runs."""

    # Each device's backlog must cover a full period of its signal (up to 600
    # readings) and then some: a detector that has not yet seen a device's
    # whole range flags every new extreme (range novelty), and live loads would
    # time a burst of warm-up alerts instead of a settled fleet's.
    devices: int = 2_000
    backlog_steps: int = 1_000
    partitions: int = 6
    loads: tuple[int, ...] = (1_000, 10_000, 50_000)
    warm_s: float = 5.0
    measure_s: float = 30.0
    ladder: tuple[float, ...] = (0.5, 0.75, 0.9, 1.0)
    ladder_s: float = 20.0
    naive_seconds: float = 20.0
    naive_max_readings: int = 300
    alerts_per_s: float = 50.0
    seed: int = 7
    ready_timeout_s: float = 120.0
    drain_timeout_s: float = 300.0
    # The raw, naive, drain and ladder paths; off: the fixed loads only.
    throughput: bool = True
    # After each fixed load, stop its daemon (final snapshot) and time a fresh one restoring every device.
    restore: bool = False


FULL = E2EOptions()
# About two and a half minutes on a 2-core machine.
QUICK = E2EOptions(devices=1_000, backlog_steps=600, warm_s=3.0, measure_s=10.0, ladder=(0.5, 0.8, 1.0),
                   ladder_s=8.0)
# A fleet of 100,000 devices, just able to alert (thresholds.warmup 40 readings, then the record gate's
# 40 scored residuals), at 10K readings/s: each
# device reads every 10 s, so a load touches every device and its snapshot round is 100K devices.
# A round is spread over half of state.snapshot_interval_s and starts an interval after the last
# one ended (45 s apart with the defaults), so a 60 s window holds a whole round; the restart then
# restores the whole fleet. About seven minutes on a 2-core machine.
QUICK_FLEET = E2EOptions(devices=100_000, backlog_steps=85, loads=(10_000,), warm_s=5.0, measure_s=60.0,
                         ladder=(), naive_seconds=5.0, restore=True)


async def run_e2e(base: Config, options: E2EOptions, broker: Broker, workdir: Path,
                  progress: Progress) -> dict[str, Any]:
    """Run the benchmark against ``broker`` and return its JSON object."""
    started = time.monotonic()
    record: dict[str, Any] = {"benchmark": "e2e", **machine_record(), "broker": broker.description}
    throughput = (await _throughput(base, options, broker, workdir, progress) if options.throughput
                  else _no_throughput(base, options))
    loads = []
    for rate in options.loads:
        progress(f"fixed load {rate:,} readings/s (fresh topic and daemon): {options.warm_s:g} s warm-up, "
                 f"{options.measure_s:g} s measured")
        loads.append(await _latency_phase(base, options, broker, workdir, rate))
    latency: dict[str, dict[str, float | None]] = {str(load["rate"]): load.pop("quantiles") for load in loads}
    streamer_rate, raw_rate = throughput.pop("streamer_rate"), throughput.pop("raw_rate")
    ladder = throughput["ladder"]
    bounded = [step["achieved_per_s"] for step in [*loads, *ladder] if step["lag_bounded"]]
    naive_rate = throughput["naive"]["readings_per_s"]
    config = throughput.pop("config")
    record.update({
        "streamer_max_readings_per_s": _round(streamer_rate),
        "raw_aiokafka_max_readings_per_s": _round(raw_rate),
        "naive_predict_readings_per_s": naive_rate,
        "ratio_to_raw": _ratio(streamer_rate, raw_rate),
        "ratio_to_naive": _ratio(streamer_rate, naive_rate),
        "sustained_max_readings_per_s": max(bounded) if bounded else None,
        "latency_ms": latency,
        "fleet": throughput["fleet"],
        "daemon": {**_daemon_settings(config), "exit_code": throughput["exit_code"]},
        "raw": throughput["raw"], "naive": throughput["naive"], "drain": throughput["drain"],
        "loads": loads, "ladder": ladder,
        "options": asdict(options),
        "load_average_end": load_average(),
        "seconds": round(time.monotonic() - started, 1),
    })
    record["targets"] = targets(record)
    return record


def _no_throughput(base: Config, options: E2EOptions) -> dict[str, Any]:
    """What :func:`_throughput` returns when it is not run (``throughput=False``)."""
    skipped = {"skipped": "fixed loads only (--no-throughput)", "readings_per_s": None}
    return {"streamer_rate": None, "raw_rate": None, "raw": skipped, "naive": skipped, "drain": skipped,
            "ladder": [], "exit_code": None, "config": base,
            "fleet": {"devices": options.devices, "partitions": options.partitions,
                      "backlog_readings": options.devices * options.backlog_steps}}


async def _throughput(base: Config, options: E2EOptions, broker: Broker, workdir: Path,
                      progress: Progress) -> dict[str, Any]:
    """Backlog, raw path, naive path, daemon drain and sustained ladder, on one topic."""
    config = bench_config(base, broker, run=run_id(), partitions=options.partitions)
    kafka = config.kafka
    await ensure_topics(kafka, [kafka.input_topic, kafka.alert_topic, kafka.dead_letter_topic])
    producer = make_load_producer(kafka)
    await producer.start()
    daemon: DaemonProcess | None = None
    try:
        generator = _generator(producer, config, options, BACKLOG_SPIKE_PROBABILITY)
        progress(f"backlog: {options.devices:,} devices x {options.backlog_steps} readings")
        produce_started = time.monotonic()
        backlog = await generator.backlog(options.backlog_steps, interval_ms=BACKLOG_INTERVAL_MS)
        produce_seconds = time.monotonic() - produce_started

        progress("raw path: aiokafka consume + decode")
        raw, first_raw_rate = await _raw_path(config, options, workdir, backlog, "raw", progress)

        progress(f"naive path: Keras predict() per reading, up to {options.naive_seconds:g} s "
                 f"or {options.naive_max_readings} readings")
        naive = await _run_path(["naive", "--seconds", str(options.naive_seconds), "--max-readings",
                                 str(options.naive_max_readings), "--expect", str(backlog),
                                 "--timeout", str(options.drain_timeout_s)],
                                with_group(config, f"{kafka.group_id}-naive"), workdir, "naive",
                                options.drain_timeout_s + 120)
        progress(f"  {_fmt(naive['readings_per_s'])} readings/s"
                 + (f" ({naive['skipped']})" if naive.get("skipped") else ""))

        progress("daemon: streamer run draining the backlog")
        daemon = DaemonProcess(config, workdir)
        daemon.start()
        drained = await wait_handled([daemon], backlog, timeout_s=options.ready_timeout_s
                                     + options.drain_timeout_s, broker_pid=broker.pid)
        series = drained.series[0]
        streamer_rate = span_rate([(s.at, s.handled) for s in series], backlog)
        drain = {"readings": backlog, "seconds_sampled": round(series[-1].at - series[0].at, 2),
                 **_drain_cpu(series, drained), "alerts": series[-1].alerts}
        progress(f"  {_fmt(streamer_rate)} readings/s")

        ladder = []
        if streamer_rate:
            generator.fleet.spike_probability = min(MAX_SPIKE_PROBABILITY,
                                                    options.alerts_per_s / streamer_rate)
            for fraction in options.ladder:
                target = round(streamer_rate * fraction)
                progress(f"sustained {fraction:.0%} of the drain rate: {target:,} readings/s")
                step = await _sustained(daemon, generator, target, options.ladder_s, broker.pid)
                ladder.append({"fraction": fraction, **step})
                if not step["lag_bounded"]:
                    break
        exit_code = daemon.stop()
        daemon = None
        # The raw path again, so the upper bound brackets the daemon's drain in time: this VM's
        # speed drifts by up to 20 % between minutes, and the mean of the two follows it.
        progress("raw path again (after the daemon): aiokafka consume + decode")
        _, second_raw_rate = await _raw_path(config, options, workdir, backlog, "raw-after", progress)
        rates = [rate for rate in (first_raw_rate, second_raw_rate) if rate]
        raw_rate = sum(rates) / len(rates) if rates else None
        raw["runs_readings_per_s"] = [_round(first_raw_rate), _round(second_raw_rate)]
    finally:
        if daemon is not None:
            daemon.stop()
        await producer.stop()
    return {"streamer_rate": streamer_rate, "raw_rate": raw_rate, "raw": raw, "naive": naive, "drain": drain,
            "ladder": ladder, "exit_code": exit_code, "config": config,
            "fleet": {"devices": options.devices, "partitions": options.partitions,
                      "backlog_readings": backlog,
                      "backlog_produce_per_s": round(backlog / produce_seconds, 1)}}


async def _raw_path(config: Config, options: E2EOptions, workdir: Path, backlog: int, name: str,
                    progress: Progress) -> tuple[dict[str, Any], float | None]:
    """Consume ``backlog`` readings from the start with the raw path in a fresh group; its record and rate."""
    raw = await _run_path(["raw", "--expect", str(backlog), "--timeout", str(options.drain_timeout_s)],
                          with_group(config, f"{config.kafka.group_id}-{name}"), workdir, name,
                          options.drain_timeout_s + 120)
    rate = span_rate([(t, c) for t, c in raw.pop("samples")], backlog)
    progress(f"  {_fmt(rate)} readings/s")
    return raw, rate


async def _latency_phase(base: Config, options: E2EOptions, broker: Broker, workdir: Path,
                         rate: int) -> dict[str, Any]:
    """One fixed load on a fresh topic with a fresh daemon warmed by a backlog.

    A fresh topic per load: the embedded broker's memory storage slows down
    as a partition's log grows (its fetch latency climbs over tens of
    seconds of live load), so loads run one after another on one topic would
    each be timed against a slower broker than the last.
    """
    config = bench_config(base, broker, run=run_id(), partitions=options.partitions)
    kafka = config.kafka
    await ensure_topics(kafka, [kafka.input_topic, kafka.alert_topic, kafka.dead_letter_topic])
    producer = make_load_producer(kafka)
    await producer.start()
    name = f"daemon-{rate}"
    daemon = DaemonProcess(config, workdir, name)
    try:
        generator = _generator(producer, config, options, BACKLOG_SPIKE_PROBABILITY)
        backlog = await generator.backlog(options.backlog_steps, interval_ms=BACKLOG_INTERVAL_MS)
        daemon.start()
        await wait_handled([daemon], backlog, timeout_s=options.ready_timeout_s + options.drain_timeout_s)
        subscriber = await _start_subscriber(config, workdir, f"alerts-{rate}")
        try:
            generator.fleet.spike_probability = min(MAX_SPIKE_PROBABILITY, options.alerts_per_s / rate)
            await generator.at_rate(rate, options.warm_s)
            step = await _sustained(daemon, generator, rate, options.measure_s, broker.pid)
        finally:
            arrivals = await _stop_subscriber(*subscriber)
        stopping = time.monotonic()
        exit_code = daemon.stop(timeout_s=options.drain_timeout_s)
        step["stop_seconds"] = round(time.monotonic() - stopping, 2)  # drain, final snapshot, commit
        if options.restore:
            step["restore"] = await _restore(config, options, workdir, f"{name}-restored")
    finally:
        daemon.stop()
        await producer.stop()
    load = {"rate": rate, "spike_probability": generator.fleet.spike_probability, **step,
            "daemon_exit_code": exit_code}
    quantiles, source, samples = _latency(arrivals.alerts, load)
    load.update({"quantiles": quantiles, "latency_source": source, "latency_samples": samples,
                 "broker_floor_ms": _floor(arrivals.readings, load)})
    return load


async def _restore(config: Config, options: E2EOptions, workdir: Path, name: str) -> dict[str, Any]:
    """Start a fresh daemon in the stopped one's group and time it restoring every partition's devices."""
    daemon = DaemonProcess(config, workdir, name)
    started = time.monotonic()
    daemon.start()
    deadline = started + options.ready_timeout_s + config.state.restore_timeout_s
    try:
        while True:
            try:
                sample = await scrape(daemon)
            except OSError:  # not serving yet
                sample = None
            if sample is not None and sample.values.get(f"{RESTORE}_count", 0.0) >= options.partitions:
                break
            if time.monotonic() > deadline:
                raise BenchFailedError(f"{name} did not restore {options.partitions} partitions in time")
            await asyncio.sleep(LOAD_SAMPLE_S)
        seconds = time.monotonic() - started
        # The gauges (devices tracked, longest pause) catch up within a refresh interval.
        await asyncio.sleep(config.metrics.refresh_interval_s + LOAD_SAMPLE_S)
        sample = await scrape(daemon)
        restore = sample.histograms.get(RESTORE)
        pauses = sample.histograms.get(SCORING_PAUSE)
        values = sample.values
        return {
            "devices_restored": int(values.get("streamer_state_restored_devices_total", 0.0)),
            "devices_tracked": int(values.get("streamer_devices_tracked", 0.0)),
            "readings_replayed": int(values.get("streamer_state_replayed_readings_total", 0.0)),
            "partitions": int(values.get(f"{RESTORE}_count", 0.0)),
            # Milliseconds matter: a small fleet restores a partition in a few (0.1 s rounding gave 0).
            "partition_seconds_sum": _round_seconds(values.get(f"{RESTORE}_sum")),
            "partition_seconds_p99": _round_seconds(restore.quantile(0.99) if restore else None),
            "start_to_restored_seconds": round(seconds, 2),
            "max_scoring_pause_ms": _ms(sample.longest_pause_s),
            "scoring_pauses_over_20ms": pauses.above(PAUSE_BUDGET_S) if pauses else None,
            "scoring_pauses_over_20ms_by_cause": _over_budget(sample),
            "exit_code": daemon.stop(),
        }
    finally:
        daemon.stop()


def _generator(producer: Any, config: Config, options: E2EOptions, spikes: float) -> LoadGenerator:
    channels = list(config.readings.channels)
    fleet = SignalFleet(options.devices, channels=len(channels), seed=options.seed, spike_probability=spikes)
    return LoadGenerator(producer, config.kafka.input_topic, fleet, partitions=options.partitions,
                         channels=channels)


def targets(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's targets for one daemon process, and whether this run met them.

    >>> t = targets({"ratio_to_raw": 0.6, "ratio_to_naive": 2000.0, "latency_ms": {"10000": {"p99": 12.0}}})
    >>> [(name, v["met"]) for name, v in t.items()]
    [('vs_raw', True), ('vs_naive', True), ('p99_ms_at_10000', True)]
    """
    p99 = record.get("latency_ms", {}).get(str(TARGET_P99_LOAD), {}).get("p99")
    # name: (value, limit, whether the value must be at least the limit or at most)
    checks: dict[str, tuple[float | None, float, bool]] = {
        "vs_raw": (record.get("ratio_to_raw"), TARGET_VS_RAW, True),
        "vs_naive": (record.get("ratio_to_naive"), TARGET_VS_NAIVE, True),
        f"p99_ms_at_{TARGET_P99_LOAD}": (p99, TARGET_P99_MS, False),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, (value, limit, at_least) in checks.items():
        met = None if value is None else (value >= limit if at_least else value <= limit)
        out[name] = {"value": value, "target": f"{'>=' if at_least else '<='} {limit:g}", "met": met}
    return out


def _daemon_settings(config: Config) -> dict[str, Any]:
    lstm = config.predictor.lstm
    return {"predictor": config.predictor.kind, "mode": lstm.mode, "backend": lstm.backend,
            "threshold": config.thresholds.method, "max_batch": config.batching.max_batch,
            "max_wait_ms": config.batching.max_wait_ms, "state_enabled": config.state.enabled,
            "fetch_max_wait_ms": config.kafka.fetch_max_wait_ms}


async def _sustained(daemon: DaemonProcess, generator: LoadGenerator, rate: float,
                     seconds: float, broker_pid: int | None) -> dict[str, Any]:
    """Produce at ``rate`` for ``seconds`` and report what the daemon kept up with, and where the CPU went."""
    first = await scrape(daemon)
    broker_first, generator_first = _cpu(broker_pid), process_cpu_seconds(os.getpid())
    machine_first = machine_busy_seconds()
    first_sent = generator.sent
    window_start_ms = time.time() * 1000.0
    lags: list[float] = []
    longest_pauses: list[float] = []

    async def sample_lag() -> None:
        while True:
            await asyncio.sleep(LOAD_SAMPLE_S)
            sample = await scrape(daemon, histograms=False)
            lags.append(generator.sent - sample.handled)
            longest_pauses.append(sample.longest_pause_s)

    sampler = asyncio.create_task(sample_lag())
    try:
        sent, elapsed = await generator.at_rate(rate, seconds)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    window_end_ms = time.time() * 1000.0
    last = await scrape(daemon)
    longest_pauses.append(last.longest_pause_s)
    lag = generator.sent - last.handled
    span = last.at - first.at
    step: dict[str, Any] = {
        "target_per_s": round(rate),
        "achieved_per_s": round(sent / elapsed, 1),
        "handled_per_s": round((last.handled - first.handled) / span, 1) if span > 0 else None,
        "lag_end": int(lag),
        "lag_max": int(max([*lags, lag])),
        "lag_bounded": bool(lag <= max(LAG_FLOOR, LAG_SLACK_S * rate)),
        "daemon_cpu_percent": cpu_percent(first, last, span),
        "broker_cpu_percent": cpu_percent(broker_first, _cpu(broker_pid), span),
        "generator_cpu_percent": cpu_percent(generator_first, process_cpu_seconds(os.getpid()), span),
        "machine_cpu_percent": cpu_percent(machine_first, machine_busy_seconds(), span),
        "window_ms": [round(window_start_ms, 1), round(window_end_ms, 1)],
        "daemon_histograms_ms": _histogram_quantiles(first, last),
        # Sampled every LOAD_SAMPLE_S: the gauge keeps each pause for one to two refresh intervals,
        # so a pause up to two intervals before the window (in the warm-up) may count too.
        "max_scoring_pause_ms": _ms(max(longest_pauses)),
        "scoring_pauses": _pauses(first, last),
    }
    # Let the daemon catch up before whatever comes next.
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while last.handled < first_sent + sent and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        last = await scrape(daemon, histograms=False)
    await generator.flush()
    return step


def _histogram_quantiles(first: Sample, last: Sample) -> dict[str, dict[str, float | None]]:
    """p50/p99/p99.9 (ms) of the daemon's own latency histograms over a window."""
    out: dict[str, dict[str, float | None]] = {}
    for name, key in ((EVENT_TO_ALERT, "event_to_alert_ack"), (EVENT_TO_DECISION, "event_to_decision"),
                      (CONSUME_TO_DECISION, "fetch_to_decision")):
        if name not in last.histograms or name not in first.histograms:
            continue
        window = last.histograms[name].minus(first.histograms[name])
        out[key] = {label: _ms(window.quantile(q)) for label, q in QUANTILES}
        out[key]["count"] = window.count
    return out


QUANTILES = (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))


def _over_budget(last: Sample, first: Sample | None = None) -> dict[str, float]:
    """Scoring pauses over :data:`PAUSE_BUDGET_S` by cause (since ``first``), causes that had any."""
    out = {}
    for cause, histogram in last.pauses_by_cause.items():
        earlier = first.pauses_by_cause.get(cause) if first is not None else None
        over = (histogram.minus(earlier) if earlier is not None else histogram).above(PAUSE_BUDGET_S)
        if over:
            out[cause] = over
    return out


def _pauses(first: Sample, last: Sample) -> dict[str, Any]:
    """Scoring pauses and snapshot rounds within a window, from the daemon's histograms."""
    out: dict[str, Any] = {}
    if SCORING_PAUSE in last.histograms and SCORING_PAUSE in first.histograms:
        window = last.histograms[SCORING_PAUSE].minus(first.histograms[SCORING_PAUSE])
        out.update({"count": window.count, "over_20ms": window.above(PAUSE_BUDGET_S),
                    "over_100ms": window.above(0.1),
                    "over_20ms_by_cause": _over_budget(last, first)})
    def moved(name: str) -> float:
        return last.values.get(name, 0.0) - first.values.get(name, 0.0)

    rounds, seconds = moved(f"{SNAPSHOT_ROUND}_count"), moved(f"{SNAPSHOT_ROUND}_sum")
    out["snapshot_rounds"] = rounds
    out["snapshot_round_seconds_mean"] = round(seconds / rounds, 2) if rounds else None
    return out


def _floor(readings: Sequence[tuple[float, float]], load: dict[str, Any]) -> dict[str, float | None]:
    """Event time to arrival at the subscriber of the sampled input readings in the load's window, ms."""
    start_ms, end_ms = load["window_ms"]
    delays = np.array([received - ts for ts, received in readings if start_ms <= ts < end_ms])
    out: dict[str, float | None] = {label: (round(float(np.percentile(delays, 100 * q)), 2)
                                            if len(delays) else None) for label, q in QUANTILES}
    out["count"] = len(delays)
    return out


def _latency(alerts: Sequence[tuple[float, float, str]],
             load: dict[str, Any]) -> tuple[dict[str, float | None], str, int]:
    """Event→alert quantiles (ms) of the alerts opened for readings inside the load's window."""
    start_ms, end_ms = load["window_ms"]
    delays = np.array([received - ts for ts, received, event in alerts
                       if event == "open" and start_ms <= ts < end_ms])
    if len(delays) >= MIN_LATENCY_SAMPLES:
        return ({label: round(float(np.percentile(delays, 100 * q)), 2) for label, q in QUANTILES},
                "alert subscriber: event time to the alert's arrival on the alert topic", len(delays))
    ack = load["daemon_histograms_ms"].get("event_to_alert_ack", {})
    return ({label: ack.get(label) for label, _ in QUANTILES},
            "daemon histogram streamer_event_to_alert_seconds (too few alerts reached the subscriber)",
            int(ack.get("count") or 0))


async def _run_path(args: list[str], config: Config, workdir: Path, name: str,
                    timeout_s: float) -> dict[str, Any]:
    """Run one path of :mod:`streamer.lab.bench.e2e_paths` in a fresh interpreter; its JSON result."""
    config_path = workdir / f"{name}.json"
    write_config_file(config, config_path)
    out = workdir / f"{name}-result.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamer.lab.bench.e2e_paths", *args, "--config", str(config_path),
        "--out", str(out), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BenchFailedError(f"{name} path: no result after {timeout_s:.0f} s") from None
    if process.returncode != 0 or not out.exists():
        tail = "\n".join(stderr.decode(errors="replace").strip().splitlines()[-15:])
        raise BenchFailedError(f"{name} path exited {process.returncode}\n{tail}")
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


async def _start_subscriber(config: Config, workdir: Path,
                            name: str) -> tuple[asyncio.subprocess.Process, Path]:
    config_path = workdir / f"{name}.json"
    write_config_file(config, config_path)
    out = workdir / f"{name}.txt"
    log_path = workdir / f"{name}.log"
    log = log_path.open("ab")
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamer.lab.bench.e2e_paths", "alerts", "--config", str(config_path),
            "--out", str(out), stdout=log, stderr=log)
    finally:
        log.close()
    deadline = time.monotonic() + SUBSCRIBER_READY_TIMEOUT_S
    while not (out.exists() and out.read_text(encoding="utf-8").startswith("# ready")):
        if process.returncode is not None or time.monotonic() > deadline:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise BenchFailedError("alert subscriber did not start:\n"
                                   + log_path.read_text(errors="replace")[-2000:])
        await asyncio.sleep(0.1)
    return process, out


@dataclass
class Arrivals:
    """What the subscriber saw.

    ``alerts``: ``(event ts, received, event)``; ``readings``: ``(event ts, received)`` (ms).
    """

    alerts: list[tuple[float, float, str]]
    readings: list[tuple[float, float]]


async def _stop_subscriber(process: asyncio.subprocess.Process, out: Path) -> Arrivals:
    """Stop the subscriber and read what it saw."""
    # The last alerts' trip from the daemon to the subscriber.
    await asyncio.sleep(1.0)
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()
    return _read_arrivals(out)


def _read_arrivals(out: Path) -> Arrivals:
    arrivals = Arrivals([], [])
    for line in out.read_text(encoding="utf-8").splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "A":
            ts, received, event = rest.split()
            arrivals.alerts.append((float(ts), float(received), event))
        elif kind == "R":
            ts, received = rest.split()
            arrivals.readings.append((float(ts), float(received)))
    return arrivals


def _drain_cpu(series: Sequence[Sample], drained: Drain) -> dict[str, float | None]:
    """CPU of the daemon, the broker and the whole machine from the first sample with progress to the last.

    Percent of one core; the machine's figure counts every process on it.
    """
    moving = [i for i, s in enumerate(series) if s.handled > 0]
    if len(moving) < 2:
        return {"daemon_cpu_percent": None, "broker_cpu_percent": None, "machine_cpu_percent": None}
    first, last = moving[0], moving[-1]
    seconds = series[last].at - series[first].at
    return {"daemon_cpu_percent": cpu_percent(series[first], series[last], seconds),
            "broker_cpu_percent": cpu_percent(drained.broker_cpu_s[first], drained.broker_cpu_s[last],
                                              seconds),
            "machine_cpu_percent": cpu_percent(drained.machine_busy_s[first], drained.machine_busy_s[last],
                                               seconds)}


def _cpu(pid: int | None) -> float | None:
    return None if pid is None else process_cpu_seconds(pid)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _round_seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def options_from(quick: bool | Literal["fleet"], **overrides: Any) -> E2EOptions:
    """QUICK, QUICK_FLEET ("fleet") or FULL with the given fields replaced (None leaves a field as it is)."""
    base = QUICK_FLEET if quick == "fleet" else QUICK if quick else FULL
    return replace(base, **{name: value for name, value in overrides.items() if value is not None})
