"""``streamer bench swap``: a model promoted while one daemon scores a fleet under load, and shadow's cost.

One daemon (``streamer run``, a subprocess as an operator starts it) follows
a bundle registry in the work directory holding two versions: the bundle
from ``--config`` as ``current`` and a relabelled copy of it
(:mod:`streamer.lab.variants`: the same weights, another version, so the
swap does all its work while alerts stay comparable). In this order:

1. **Warm-up**: a backlog of ``warm_steps`` readings per device, enough to
   fill every ring buffer and take every device past the threshold warm-up.
2. **Live load** at ``rate`` readings per second, round robin over the
   fleet (:class:`~streamer.lab.bench.load.LoadGenerator`), through steps 3-5:
3. ``before``: ``measure_s`` seconds.
4. ``during``: the relabelled copy is promoted; from then until the daemon's
   ``streamer_model_swaps_total{role="current"}`` increments (it read the
   pointer, loaded and checked the bundle, rebuilt every device's forecaster
   state from its ring buffer in jobs between batches, and switched).
5. ``after``: ``measure_s`` seconds; then the load stops and the daemon
   catches up.
6. **Shadow cost**: the daemon's highest rate with and without a candidate
   in shadow, alternating ``shadow_rounds`` times. Each is a backlog drain
   (the daemon is frozen while ``shadow_readings`` are produced, then
   thawed and timed as :func:`~streamer.lab.bench.daemon.span_rate` times a
   drain): at a fixed input rate a daemon that keeps up scores the input
   rate either way, so only a drain shows what shadow costs. "With" is the
   other version set as ``candidate``, timed once the daemon reports it
   (``streamer_model_version_info{role="candidate"}``); a daemon that never
   does within ``shadow_timeout_s`` (no shadow scoring in this build) has
   the "with" side reported as skipped, with the reason.
7. **Accounting**: the daemon is stopped (graceful drain, final commit); the
   readings produced are compared with what it scored, took into warm-up
   and rejected, and with the group's committed offsets.

Readings per second are the daemon's (scored + warm-up + rejected, from its
``/metrics``), not the input's; the input's achieved rate is reported
beside them.
"""

from __future__ import annotations

import asyncio
import math
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from models.bundle import DEFAULT_BUNDLE, default_bundle_path
from models.registry import BundleRegistry
from streamer.config import Config
from streamer.kafka.clients import connection_kwargs, ensure_topics
from streamer.lab.bench.daemon import (
    SCORING_PAUSE,
    SCRAPE_TIMEOUT_S,
    DaemonProcess,
    Histogram,
    Sample,
    cpu_percent,
    parse_metrics,
    span_rate,
)
from streamer.lab.bench.fleet import SignalFleet
from streamer.lab.bench.load import LoadGenerator, make_load_producer
from streamer.lab.bench.machine import load_average, machine_record, process_cpu_seconds
from streamer.lab.bench.runs import BenchFailedError, Broker, Progress, bench_config, run_id, wait_handled
from streamer.lab.variants import two_version_registry

SWAPS = "streamer_model_swaps_total"
VERSION_INFO = "streamer_model_version_info"
WARMING = "streamer_devices_warming_up"
REJECTED = "streamer_readings_rejected_total"
# Rejections that mean a reading reached a device twice (the generator never repeats an event time).
REPEAT_REASONS = ("duplicate_timestamp", "out_of_order")
# How often the swap and the drains are sampled: fine enough to time a swap of a few seconds.
SAMPLE_S = 0.1
# The bench's daemon refreshes its gauges this often, so the longest-pause gauge (which holds a
# pause for one to two intervals) is sampled several times per pause by SAMPLE_S.
REFRESH_S = 0.5
# The live load is run in chunks this long, so it stops within one of them.
LIVE_CHUNK_S = 1.0
# Live input before ``before`` is measured: the daemon goes from the backlog to the load.
LIVE_LEAD_S = 3.0
SETTLE_TIMEOUT_S = 120.0
# The issue's target for the longest scoring pause during a swap.
TARGET_PAUSE_MS = 100.0
SHADOW_ROLE = "candidate"


@dataclass(frozen=True)
class SwapOptions:
    """What ``streamer bench swap`` runs."""

    devices: int = 100_000
    rate: int = 50_000  # live readings per second
    partitions: int = 6
    measure_s: float = 20.0  # `before` and `after` each
    shadow_rounds: int = 2  # without/with pairs
    shadow_readings: int = 1_500_000  # per drain
    poll_interval_s: float = 0.2  # predictor.lstm.poll_interval_s of the daemon
    swap_timeout_s: float = 180.0
    shadow_timeout_s: float = 30.0
    ready_timeout_s: float = 120.0
    drain_timeout_s: float = 300.0
    seed: int = 7


FULL = SwapOptions()
# About two and a half minutes on a 2-core machine.
QUICK = SwapOptions(devices=20_000, rate=10_000, measure_s=10.0, shadow_rounds=1, shadow_readings=600_000,
                    shadow_timeout_s=20.0)


def options_from(quick: bool, **overrides: Any) -> SwapOptions:
    """QUICK or FULL with the given fields replaced (None leaves a field as it is)."""
    return replace(QUICK if quick else FULL, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class Scrape:
    """One read of the daemon's ``/metrics``: the bench's :class:`Sample` and the labelled series it needs."""

    sample: Sample
    swaps: dict[str, float]  # by role
    versions: dict[str, str]  # role -> version shown by streamer_model_version_info
    rejected: dict[str, float]  # by reason


def read_scrape(text: str, *, at: float, cpu_s: float | None) -> Scrape:
    r"""A :class:`Scrape` from one exposition.

    >>> text = ('streamer_model_swaps_total{role="current"} 1.0\n'
    ...         'streamer_model_version_info{role="current",version="lstm-a"} 1.0\n')
    >>> s = read_scrape(text, at=0.0, cpu_s=None)
    >>> s.swaps, s.versions
    ({'current': 1.0}, {'current': 'lstm-a'})
    """
    swaps: dict[str, float] = {}
    versions: dict[str, str] = {}
    rejected: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == SWAPS:
                swaps[sample.labels["role"]] = sample.value
            elif sample.name == VERSION_INFO and sample.value > 0:
                versions[sample.labels["role"]] = sample.labels["version"]
            elif sample.name == REJECTED:
                rejected[sample.labels["reason"]] = sample.value
    return Scrape(parse_metrics(text, at=at, cpu_s=cpu_s), swaps, versions, rejected)


def _scrape_now(daemon: DaemonProcess) -> Scrape:
    daemon.check_alive()
    at = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics",  # loopback http
                                timeout=SCRAPE_TIMEOUT_S) as response:
        body: bytes = response.read()
    return read_scrape(body.decode("utf-8"), at=at, cpu_s=process_cpu_seconds(daemon.pid))


async def scrape(daemon: DaemonProcess) -> Scrape:
    """Scrape the whole exposition off the event loop."""
    return await asyncio.to_thread(_scrape_now, daemon)


class LiveLoad:
    """The generator at a fixed rate in the background, until stopped."""

    def __init__(self, generator: LoadGenerator, rate: float) -> None:
        self.generator = generator
        self.rate = rate
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.started = 0.0

    def start(self) -> None:
        """Start producing."""
        self.started = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="bench-swap-load")

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self.generator.at_rate(self.rate, LIVE_CHUNK_S)

    def check(self) -> None:
        """Raise the generator's error, if it failed."""
        if self._task is not None and self._task.done():
            self._task.result()

    async def stop(self) -> None:
        """Stop after the current chunk; every reading sent is acknowledged when this returns."""
        self._stop.set()
        if self._task is not None:
            await self._task
        await self.generator.flush()


@dataclass(frozen=True)
class Mark:
    """The daemon and the input at one moment."""

    at: float
    handled: float
    sent: int
    cpu_s: float | None


def _mark(scraped: Scrape, generator: LoadGenerator) -> Mark:
    sample = scraped.sample
    return Mark(sample.at, sample.handled, generator.sent, sample.cpu_s)


def _rates(first: Mark, last: Mark) -> dict[str, float | None]:
    """The daemon's and the input's readings per second between two marks."""
    span = last.at - first.at
    if span <= 0:
        return {"seconds": 0.0, "readings_per_s": None, "input_per_s": None, "daemon_cpu_percent": None}
    return {"seconds": round(span, 2),
            "readings_per_s": round((last.handled - first.handled) / span, 1),
            "input_per_s": round((last.sent - first.sent) / span, 1),
            "daemon_cpu_percent": cpu_percent(first.cpu_s, last.cpu_s, span)}


async def run_swap(base: Config, options: SwapOptions, broker: Broker, workdir: Path,
                   progress: Progress) -> dict[str, Any]:
    """Run the benchmark against ``broker`` and return its JSON object."""
    started = time.monotonic()
    record: dict[str, Any] = {"benchmark": "swap", **machine_record(), "broker": broker.description}
    source = default_bundle_path() if base.predictor.lstm.bundle == DEFAULT_BUNDLE \
        else Path(base.predictor.lstm.bundle)
    registry = BundleRegistry(workdir / "registry")
    first, second = await asyncio.to_thread(two_version_registry, registry.root, source, workdir)
    config = _swap_config(bench_config(base, broker, run=run_id(), partitions=options.partitions),
                          registry.root, options)
    kafka = config.kafka
    await ensure_topics(kafka, [kafka.input_topic, kafka.alert_topic, kafka.dead_letter_topic])
    producer = make_load_producer(kafka)
    await producer.start()
    daemon = DaemonProcess(config, workdir, "daemon-swap")
    try:
        channels = list(config.readings.channels)
        fleet = SignalFleet(options.devices, channels=len(channels), seed=options.seed)
        generator = LoadGenerator(producer, kafka.input_topic, fleet, partitions=options.partitions,
                                  channels=channels)
        warm_steps = max(config.buffers.window, config.thresholds.warmup) + 8
        progress(f"warm-up: {options.devices:,} devices x {warm_steps} readings (every ring buffer full, "
                 f"every device past warm-up)")
        backlog = await generator.backlog(warm_steps, interval_ms=1_000)
        daemon.start()
        await wait_handled([daemon], backlog, timeout_s=options.ready_timeout_s + options.drain_timeout_s)
        warmed = await _wait_gauge_zero(daemon, WARMING, timeout_s=10 * REFRESH_S)
        progress(f"  {backlog:,} readings handled; devices still warming up: {warmed:,.0f}")

        live = LiveLoad(generator, options.rate)
        live.start()
        swap = await _swap_under_load(daemon, live, registry, second, options, progress)
        await live.stop()
        progress("load stopped; the daemon catches up")
        await _settle(daemon, generator)
        shadow = await _shadow_cost(daemon, generator, registry, first, options, progress)
        final = await _settle(daemon, generator)
        exit_code = daemon.stop(timeout_s=options.drain_timeout_s)
        committed = await _committed(config, options.partitions)
    finally:
        daemon.stop()
        await producer.stop()
    accounting = _accounting(generator.sent, final, committed)
    record.update({
        "readings_lost": accounting.pop("lost"),
        "readings_scored_twice": accounting.pop("scored_twice"),
        "max_pause_ms": swap["max_pause_ms"],
        "max_pause_source": swap["max_pause_source"],
        "readings_per_s": {phase: swap[phase]["readings_per_s"] for phase in ("before", "during", "after")},
        "shadow_readings_per_s": {"without": shadow["without"], "with": shadow["with"]},
        "target_readings_per_s": options.rate,
        "devices": options.devices,
        "swap_seconds": swap["swap_seconds"],
        "versions": {"from": first, "to": second, "relabelled_copy": True},
        "phases": {phase: swap[phase] for phase in ("before", "during", "after")},
        "swap": {key: value for key, value in swap.items() if key not in ("before", "during", "after")},
        "shadow": shadow,
        "accounting": accounting,
        "warm_up": {"readings": backlog, "steps_per_device": warm_steps, "devices_warming_after": warmed},
        "daemon": {"mode": config.predictor.lstm.mode, "backend": config.predictor.lstm.backend,
                   "state_enabled": config.state.enabled, "max_batch": config.batching.max_batch,
                   "poll_interval_s": options.poll_interval_s,
                   "shadow_fraction": config.predictor.lstm.shadow.fraction, "exit_code": exit_code},
        "options": asdict(options),
        "load_average_end": load_average(),
        "seconds": round(time.monotonic() - started, 1),
    })
    pause = record["max_pause_ms"]
    record["targets"] = {
        "max_pause_ms": {"value": pause, "target": f"<= {TARGET_PAUSE_MS:g}",
                         "met": None if pause is None else pause <= TARGET_PAUSE_MS},
        "readings_lost_and_scored_twice": {
            "value": [record["readings_lost"], record["readings_scored_twice"]], "target": "0 and 0",
            "met": record["readings_lost"] == 0 and record["readings_scored_twice"] == 0}}
    return record


def _swap_config(config: Config, registry: Path, options: SwapOptions) -> Config:
    """The daemon follows ``registry``, checks it every ``poll_interval_s``, refreshes gauges often."""
    lstm = msgspec.structs.replace(config.predictor.lstm, registry=str(registry),
                                   poll_interval_s=options.poll_interval_s)
    return msgspec.structs.replace(
        config, predictor=msgspec.structs.replace(config.predictor, kind="lstm", lstm=lstm),
        metrics=msgspec.structs.replace(config.metrics, refresh_interval_s=REFRESH_S))


async def _wait_gauge_zero(daemon: DaemonProcess, name: str, timeout_s: float) -> float:
    """Wait until gauge ``name`` reads 0 (it lags by a refresh interval); its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = (await scrape(daemon)).sample.values.get(name, 0.0)
        if value <= 0 or time.monotonic() > deadline:
            return value
        await asyncio.sleep(REFRESH_S)


async def _measure(daemon: DaemonProcess, live: LiveLoad, seconds: float) -> dict[str, Any]:
    """The daemon's and the input's rates over ``seconds`` of live load, and the lag at the end."""
    first = _mark(await scrape(daemon), live.generator)
    longest = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await asyncio.sleep(min(SAMPLE_S * 5, max(0.0, end - time.monotonic())))
        live.check()
        longest = max(longest, (await scrape(daemon)).sample.longest_pause_s)
    last_scrape = await scrape(daemon)
    last = _mark(last_scrape, live.generator)
    return {**_rates(first, last), "lag_end": int(last.sent - last.handled),
            "max_pause_ms": _ms(max(longest, last_scrape.sample.longest_pause_s))}


async def _swap_under_load(daemon: DaemonProcess, live: LiveLoad, registry: BundleRegistry, version: str,
                           options: SwapOptions, progress: Progress) -> dict[str, Any]:
    """``before``, the promotion and ``during`` (until the swap counter moves), ``after``."""
    await asyncio.sleep(LIVE_LEAD_S)
    progress(f"live load {options.rate:,} readings/s; before: {options.measure_s:g} s")
    before = await _measure(daemon, live, options.measure_s)
    progress(f"  {_fmt(before['readings_per_s'])} readings/s")

    ahead = await scrape(daemon)
    swaps_before = ahead.swaps.get("current", 0.0)
    running = ahead.versions.get("current")
    progress(f"promote {version} (running {running})")
    promoted = time.monotonic()
    start_mark = _mark(ahead, live.generator)
    await asyncio.to_thread(registry.promote, version, note="streamer bench swap")
    samples = [ahead]
    marks = [start_mark]  # taken with each sample: the lag is the input sent by then less what was handled
    while True:
        await asyncio.sleep(SAMPLE_S)
        live.check()
        samples.append(await scrape(daemon))
        marks.append(_mark(samples[-1], live.generator))
        if samples[-1].swaps.get("current", 0.0) > swaps_before:
            break
        if time.monotonic() - promoted > options.swap_timeout_s:
            raise BenchFailedError(f"the daemon did not swap to {version} within {options.swap_timeout_s:g} s"
                                   f"\n{daemon.log_tail()}")
    swapped = samples[-1]
    during = {**_rates(start_mark, marks[-1]), "lag_start": int(start_mark.sent - start_mark.handled),
              "lag_max": int(max(mark.sent - mark.handled for mark in marks)),
              "lag_end": int(marks[-1].sent - marks[-1].handled)}
    # The switch job's pause shows in the gauge at the next refresh: keep sampling for two.
    tail_until = time.monotonic() + 2 * REFRESH_S + SAMPLE_S
    while time.monotonic() < tail_until:
        await asyncio.sleep(SAMPLE_S)
        samples.append(await scrape(daemon))
    longest = max(s.sample.longest_pause_s for s in samples[1:])
    model_pauses = _pause_window(ahead.sample, samples[-1].sample, "model")
    all_pauses = _pause_window(ahead.sample, samples[-1].sample, None)
    swap_seconds = swapped.sample.values.get("streamer_model_swap_seconds_sum", 0.0) \
        - ahead.sample.values.get("streamer_model_swap_seconds_sum", 0.0)
    progress(f"  swapped in {swap_seconds:.2f} s (promote to counter: {during['seconds']} s), "
             f"{_fmt(during['readings_per_s'])} readings/s, longest scoring pause {_ms(longest)} ms")
    progress(f"after: {options.measure_s:g} s")
    after = await _measure(daemon, live, options.measure_s)
    progress(f"  {_fmt(after['readings_per_s'])} readings/s")
    return {
        "before": before, "during": during, "after": after,
        "max_pause_ms": _ms(longest),
        "max_pause_source": (f"streamer_scoring_pause_longest_seconds (every cause), sampled every "
                             f"{SAMPLE_S:g} s from the promotion to {2 * REFRESH_S:g} s after the swap "
                             f"(metrics.refresh_interval_s {REFRESH_S:g}: each pause is seen)"),
        "swap_seconds": round(swap_seconds, 3),
        "promote_to_swapped_s": during["seconds"],
        "version_before": running, "version_after": swapped.versions.get("current"),
        "model_pauses": model_pauses,
        "pauses_by_cause_over_20ms": {cause: window["over_20ms"]
                                      for cause, window in _pauses_by_cause(ahead.sample,
                                                                            samples[-1].sample).items()
                                      if window["over_20ms"]},
        "all_pauses": all_pauses,
    }


def _pause_window(first: Sample, last: Sample, cause: str | None) -> dict[str, Any]:
    """Scoring pauses between two scrapes (one cause, or all): count, over 20 and 100 ms, the top bucket."""
    if cause is None:
        now, then = last.histograms.get(SCORING_PAUSE), first.histograms.get(SCORING_PAUSE)
    else:
        now, then = last.pauses_by_cause.get(cause), first.pauses_by_cause.get(cause)
    if now is None:
        return {"count": 0}
    window = now.minus(then) if then is not None else now
    return {"count": window.count, "over_20ms": window.above(0.02), "over_100ms": window.above(0.1),
            "longest_at_most_ms": _top_bucket_ms(window)}


def _pauses_by_cause(first: Sample, last: Sample) -> dict[str, dict[str, Any]]:
    return {cause: _pause_window(first, last, cause) for cause in last.pauses_by_cause}


def _top_bucket_ms(window: Histogram) -> float | None:
    """The upper bound (ms) of the highest bucket holding an observation; inf above the last bound.

    >>> _top_bucket_ms(Histogram((0.01, 0.05, math.inf), (3.0, 5.0, 5.0)))
    50.0
    """
    below = 0.0
    top: float | None = None
    for bound, cumulative in zip(window.bounds, window.cumulative, strict=True):
        if cumulative > below:
            top = bound
        below = cumulative
    return None if top is None else top * 1000.0


async def _settle(daemon: DaemonProcess, generator: LoadGenerator) -> Scrape:
    """Wait until the daemon has handled every reading sent (or the timeout)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        scraped = await scrape(daemon)
        if scraped.sample.handled >= generator.sent or time.monotonic() > deadline:
            return scraped
        await asyncio.sleep(SAMPLE_S * 2)


async def _shadow_cost(daemon: DaemonProcess, generator: LoadGenerator, registry: BundleRegistry,
                       candidate: str, options: SwapOptions, progress: Progress) -> dict[str, Any]:
    """Drain rates without and with ``candidate`` in shadow, alternating (see the module docstring)."""
    steps = max(1, math.ceil(options.shadow_readings / options.devices))
    drains: list[dict[str, Any]] = []
    skipped: str | None = None
    for _ in range(options.shadow_rounds):
        for shadowed in (False, True):
            if shadowed and skipped is not None:
                continue
            if shadowed:
                await asyncio.to_thread(registry.shadow, candidate, note="streamer bench swap: shadow cost")
                active = await _wait_role(daemon, SHADOW_ROLE, candidate, options.shadow_timeout_s)
                if not active:
                    skipped = (f"the daemon did not report {candidate} as candidate "
                               f"({VERSION_INFO}{{role=\"candidate\"}}) within "
                               f"{options.shadow_timeout_s:g} s of setting it: no shadow scoring here")
                    progress(f"shadow: skipped ({skipped})")
                    await asyncio.to_thread(registry.shadow, None, note="streamer bench swap")
                    continue
            drain = await _drain(daemon, generator, steps)
            drains.append({"shadow": shadowed, **drain})
            progress(f"drain {'with' if shadowed else 'without'} a candidate: "
                     f"{_fmt(drain['readings_per_s'])} readings/s")
            if shadowed:
                await asyncio.to_thread(registry.shadow, None, note="streamer bench swap")
                await _wait_role(daemon, SHADOW_ROLE, None, options.shadow_timeout_s)
    without = [d["readings_per_s"] for d in drains if not d["shadow"] and d["readings_per_s"]]
    with_ = [d["readings_per_s"] for d in drains if d["shadow"] and d["readings_per_s"]]
    out: dict[str, Any] = {
        "without": round(sum(without) / len(without), 1) if without else None,
        "with": round(sum(with_) / len(with_), 1) if with_ else None,
        "method": (f"backlog drains of {steps * options.devices:,} readings (the daemon frozen while they "
                   "are produced), alternating without/with a candidate; the mean of each side"),
        "drains": drains,
    }
    if skipped is not None:
        out["with_skipped"] = skipped
    if out["without"] and out["with"]:
        out["cost_fraction"] = round(1.0 - out["with"] / out["without"], 3)
    return out


async def _wait_role(daemon: DaemonProcess, role: str, version: str | None, timeout_s: float) -> bool:
    """Wait until the daemon reports ``version`` (None: nothing) for ``role``; whether it did in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (await scrape(daemon)).versions.get(role) == version:
            return True
        await asyncio.sleep(SAMPLE_S * 2)
    return False


async def _drain(daemon: DaemonProcess, generator: LoadGenerator, steps: int) -> dict[str, Any]:
    """Freeze the daemon, produce ``steps`` readings per device, thaw it and time it working them off."""
    first = await scrape(daemon)
    daemon.freeze()
    try:
        for _ in range(steps):
            await generator.send(generator.fleet.devices, int(time.time() * 1000))
        await generator.flush()
    finally:
        daemon.thaw()
    total = steps * generator.fleet.devices
    series: list[tuple[float, float]] = []
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    cpu_first, at_first = first.sample.cpu_s, time.monotonic()
    while True:
        scraped = await scrape(daemon)
        done = scraped.sample.handled - first.sample.handled
        series.append((scraped.sample.at, done))
        if done >= total or time.monotonic() > deadline:
            break
        await asyncio.sleep(SAMPLE_S)
    rate = span_rate(series, total)
    return {"readings": total, "readings_per_s": None if rate is None else round(rate, 1),
            "seconds": round(series[-1][0] - series[0][0], 2),
            "daemon_cpu_percent": cpu_percent(cpu_first, scraped.sample.cpu_s, scraped.sample.at - at_first)}


async def _committed(config: Config, partitions: int) -> int | None:
    """Sum of the group's committed offsets over the input partitions (None: a partition never committed)."""
    kafka = config.kafka
    consumer = AIOKafkaConsumer(group_id=kafka.group_id, enable_auto_commit=False, **connection_kwargs(kafka))
    await consumer.start()
    try:
        offsets = [await consumer.committed(TopicPartition(kafka.input_topic, p)) for p in range(partitions)]
    finally:
        await consumer.stop()
    return None if any(offset is None for offset in offsets) else sum(o for o in offsets if o is not None)


def _accounting(sent: int, final: Scrape, committed: int | None) -> dict[str, Any]:
    r"""Readings lost and scored twice, from what was produced and what the daemon counted.

    Every reading produced is valid and each device's event times only move
    forward, so each must be scored (or taken into warm-up) exactly once:
    fewer is a loss, more a reading scored twice. A reading delivered to its
    device twice is rejected as a repeat rather than scored again, so
    repeats are counted apart; any other rejection is a loss too.

    >>> text = ('streamer_readings_scored_total 90.0\nstreamer_readings_warmup_total 10.0\n'
    ...         'streamer_readings_rejected_total{reason="duplicate_timestamp"} 0.0\n')
    >>> a = _accounting(100, read_scrape(text, at=0.0, cpu_s=None), 100)
    >>> a["lost"], a["scored_twice"], a["committed_matches_produced"]
    (0, 0, True)
    """
    values = final.sample.values
    scored = int(values.get("streamer_readings_scored_total", 0.0))
    warmup = int(values.get("streamer_readings_warmup_total", 0.0))
    once = scored + warmup
    repeats = int(sum(final.rejected.get(reason, 0.0) for reason in REPEAT_REASONS))
    other_rejections = {reason: int(count) for reason, count in final.rejected.items()
                        if count and reason not in REPEAT_REASONS}
    return {
        "lost": max(0, sent - once) + sum(other_rejections.values()),
        "scored_twice": max(0, once - sent),
        "produced": sent, "scored": scored, "warmup": warmup,
        "consumed": int(values.get("streamer_readings_consumed_total", 0.0)),
        "rejected_as_repeats": repeats, "rejected_otherwise": other_rejections,
        "committed": committed, "committed_matches_produced": committed == sent,
        "method": ("produced readings vs the daemon's streamer_readings_scored_total + "
                   "streamer_readings_warmup_total after it caught up (each reading must be counted once), "
                   "rejections by reason, and the group's committed offsets after a graceful stop"),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"
