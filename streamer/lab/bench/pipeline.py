"""Readings per second through the daemon's scoring path without Kafka, per mode, backend and fleet.

What is timed is exactly what the daemon does with a fetched batch after
``getmany`` returns it: :meth:`ReadingDecoder.decode` (msgspec, checks,
columnar arrays) and :meth:`ScoringPipeline.score` (device registry, ring
buffers, the batched LSTM predictor, the threshold, alert episodes and the
alerts themselves). Building the wire records is not timed.

Each configuration runs in a fresh interpreter (``python -m
streamer.lab.bench.pipeline_worker``) so its peak RSS is its own: at a million
devices that is the figure to hold against the memory budget. The worker
admits every device with one untimed pass over the fleet, then brings the
fleet to steady state (every device past warm-up, its LSTM state or window
full, see :func:`steady_state`), then times batches of ``batching.max_batch``
distinct devices taken in turn from a random permutation of the fleet, with
event times that move forward on every pass.

A record (the JSON written by ``streamer bench pipeline --json`` is a list)::

    mode, backend, devices, batch       the configuration
    readings_per_s                      decoded and scored readings per second
    decode_share, model_share,          where the timed seconds went: decoding, the predictor
    pipeline_share                      (forecast + observe), the rest of ScoringPipeline.score
    seconds, calls, alerts              the timed span, score calls and alert events in it
    peak_rss_mb                         peak resident memory of the worker, MiB
    state_table_mb                      slot table plus the backend's state table, MiB
    threshold_method, bundle_version, keras_backend, blas_threads
    machine, load_average               see :mod:`streamer.lab.bench.machine`
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from streamer.config import Config, write_config_file
from streamer.lab.bench.fleet import IntArray, WireRecord, encode_readings
from streamer.lab.bench.machine import blas_threads, keras_backend, machine_record
from streamer.lab.bench.model import (
    BLAS_THREAD_VARIABLES,
    COUNT_FIELD,
    MIB,
    WorkerFailedError,
    peak_rss_mb,
    state_table_bytes,
)

if TYPE_CHECKING:
    from models.backends import BackendName
    from streamer.codec import ReadingDecoder
    from streamer.scoring.lstm import PredictorMode
    from streamer.scoring.pipeline import ScoringPipeline

MODES: tuple[PredictorMode, ...] = ("stateful", "window")
BACKENDS: tuple[BackendName, ...] = ("numpy", "tensorflow", "keras")
FLEETS = (1_000, 100_000, 1_000_000)
WARMUP_CALLS = 3  # the first calls trace tf.functions and fault pages in
MIN_CALLS = 5
# The keras backend copies its whole state table on every call (a functional
# scatter); beyond this many devices one configuration takes minutes.
KERAS_MAX_DEVICES = 100_000
WORKER_TIMEOUT_S = 900.0
# Event-time step between two readings of one device: 1 s, as a slow sensor sends.
STEP_MS = 1_000
BASE_TS_MS = 1_700_000_000_000
# Readings are N(10, 2): a live, unremarkable signal (the threshold rarely flags it).
VALUE_MEAN, VALUE_STD = 10.0, 2.0
TOPIC = "bench"
# Readings per template device before its state is copied to the fleet: past
# every warm-up of the default config (threshold 40 readings, LSTM one window)
# and enough for the threshold's statistics to settle.
TEMPLATE_PASSES = 80
# Devices that read the template passes: enough distinct states to copy from,
# few enough that the slowest backend (window/keras) primes in seconds.
TEMPLATE_DEVICES = 1024

Record = dict[str, Any]


@dataclass(frozen=True)
class PipelinePoint:
    """One configuration to measure."""

    mode: PredictorMode
    backend: BackendName
    devices: int
    # Share of devices a candidate scores in shadow (0: no candidate).
    shadow: float = 0.0

    def label(self) -> str:
        """Short name for logs, e.g. ``stateful/numpy x 100,000 devices``."""
        shadowed = f", shadow {self.shadow:g}" if self.shadow else ""
        return f"{self.mode}/{self.backend} x {self.devices:,} devices{shadowed}"


@dataclass(frozen=True)
class PipelineSweep:
    """Configurations to measure and how long to time each."""

    points: tuple[PipelinePoint, ...]
    seconds: float


def grid(modes: Iterable[PredictorMode], backends: Iterable[BackendName], devices: Iterable[int],
         shadows: Iterable[float] = (0.0,)) -> tuple[list[PipelinePoint], list[tuple[PipelinePoint, str]]]:
    """Every combination, split into those measured and those skipped (with the reason).

    >>> points, skipped = grid(["stateful"], ["numpy", "keras"], [1_000, 1_000_000])
    >>> [p.label() for p in points]
    ['stateful/numpy x 1,000 devices', 'stateful/keras x 1,000 devices', 'stateful/numpy x 1,000,000 devices']
    >>> [reason for _, reason in skipped]
    ['keras backend only up to 100,000 devices (it copies its whole state table on every call)']
    """
    points: list[PipelinePoint] = []
    skipped: list[tuple[PipelinePoint, str]] = []
    for fleet, mode, backend, shadow in itertools.product(devices, modes, backends, shadows):
        point = PipelinePoint(mode, backend, fleet, shadow)
        if backend == "keras" and fleet > KERAS_MAX_DEVICES:
            skipped.append((point, f"keras backend only up to {KERAS_MAX_DEVICES:,} devices "
                                   "(it copies its whole state table on every call)"))
        else:
            points.append(point)
    return points, skipped


FULL_POINTS, FULL_SKIPPED = grid(MODES, BACKENDS, FLEETS)
FULL_SWEEP = PipelineSweep(tuple(FULL_POINTS), seconds=3.0)
# The target configuration (stateful/numpy at 100K devices), the Keras-free and
# TensorFlow backends beside it, and the memory check at a million devices.
QUICK_SWEEP = PipelineSweep((
    PipelinePoint("stateful", "numpy", 1_000),
    PipelinePoint("stateful", "numpy", 100_000),
    PipelinePoint("stateful", "tensorflow", 100_000),
    PipelinePoint("window", "numpy", 100_000),
    PipelinePoint("window", "tensorflow", 100_000),
    PipelinePoint("stateful", "numpy", 1_000_000),
), seconds=2.0)


def point_config(base: Config, point: PipelinePoint) -> Config:
    """``base`` with the LSTM predictor of ``point`` and room for its whole fleet from the start.

    The registry is sized for the fleet up front so no timed call pays for a
    table resize (a live daemon pays it once per doubling).
    """
    lstm = msgspec.structs.replace(base.predictor.lstm, mode=point.mode, backend=point.backend)
    if point.shadow:
        shadow = msgspec.structs.replace(lstm.shadow, fraction=point.shadow)
        lstm = msgspec.structs.replace(lstm, shadow=shadow)
    predictor = msgspec.structs.replace(base.predictor, kind="lstm", lstm=lstm)
    buffers = msgspec.structs.replace(base.buffers, initial_devices=point.devices,
                                      max_devices=max(base.buffers.max_devices, point.devices))
    return msgspec.structs.replace(base, predictor=predictor, buffers=buffers)


# --- in the worker -------------------------------------------------------------------------------


class _Feed:
    """Wire records for consecutive chunks of a permutation of the fleet, each pass one step later."""

    def __init__(self, devices: int, batch: int, channels: list[str], rng: np.random.Generator) -> None:
        self.devices = devices
        self.batch = batch
        self.channels = channels
        self.rng = rng
        self.order = rng.permutation(devices).astype(np.int64)
        self.position = 0  # readings of the permutation handed out so far
        self.first_pass = 0  # pass of the permutation's first reading
        self.offset = 0

    def records(self, devices: IntArray, passes: IntArray) -> list[WireRecord]:
        """One reading of each of ``devices``, at event time step ``passes``."""
        ts = BASE_TS_MS + passes * STEP_MS
        values = self.rng.normal(VALUE_MEAN, VALUE_STD, size=(len(devices), len(self.channels)))
        pairs = encode_readings(devices, ts, values, self.channels)
        records = [WireRecord(TOPIC, 0, self.offset + i, key, value, t)
                   for i, ((key, value), t) in enumerate(zip(pairs, ts.tolist(), strict=True))]
        self.offset += len(records)
        return records

    def next_batch(self) -> list[WireRecord]:
        """The next ``batch`` readings of the permutation (distinct devices)."""
        positions = self.position + np.arange(self.batch, dtype=np.int64)
        self.position += self.batch
        return self.records(self.order[positions % self.devices],
                            self.first_pass + positions // self.devices)


def steady_state(pipeline: ScoringPipeline, decoder: ReadingDecoder, feed: _Feed, devices: int,
                 rng: np.random.Generator) -> None:
    """Put every admitted device where a long-running fleet is, so each timed reading does full work.

    The first :data:`TEMPLATE_DEVICES` devices read :data:`TEMPLATE_PASSES` readings
    each through the real pipeline; their per-device state (normalisation,
    forecasts, input windows, threshold statistics, episodes, counters) is
    then copied, cyclically, onto the rest of the fleet. Every reading is
    then scored, thresholds judge against settled statistics (so alerts are
    as rare as in a calm fleet), and each device's LSTM reading count is set
    past one window at a random phase (both staggered states running,
    restarts spread over calls). The backend's own state table is left as
    one step from zero: it costs the same per step, and every state is
    restarted within one window anyway.
    """
    from streamer.scoring.lstm import LSTMPredictor
    from streamer.state.registry import BOOKKEEPING_FIELDS

    template = min(devices, TEMPLATE_DEVICES)
    ids = np.arange(template, dtype=np.int64)
    for step in range(1, TEMPLATE_PASSES + 1):
        pipeline.score(decoder.decode(feed.records(ids, np.full(template, step, dtype=np.int64))).readings)
    feed.first_pass = TEMPLATE_PASSES + 1
    table = pipeline.registry.table
    keep = {"last_ts", *BOOKKEEPING_FIELDS}  # per-device identity, not detector state
    for name in table.fields:
        if name not in keep:
            field = table[name]
            # In place, a template's worth at a time: no fleet-sized temporary in the peak RSS.
            for start in range(template, devices, template):
                stop = min(start + template, devices)
                field[start:stop] = field[:stop - start]
    predictor = pipeline.predictor
    if isinstance(predictor, LSTMPredictor):
        window = predictor.window
        table[COUNT_FIELD][:devices] = rng.integers(window, 2 * window, size=devices)


def measure(base: Config, point: PipelinePoint, *, seconds: float, min_calls: int = MIN_CALLS,
            warmup_calls: int = WARMUP_CALLS, seed: int = 0,
            on_primed: Callable[[], None] | None = None) -> Record:
    """Time decode → score for one configuration in this process and return its record.

    Run it in a fresh process (:func:`run_point`) for a meaningful ``peak_rss_mb``.

    Args:
        base: Daemon configuration; its predictor mode/backend and fleet room are replaced.
        point: The configuration.
        seconds: Time at least this long (decode and score only) ...
        min_calls: ... and at least this many score calls.
        warmup_calls: Untimed calls after priming.
        seed: Seeds the permutation and the readings.
        on_primed: Called once the fleet is in steady state, before the timed loop (profiling hook).
    """
    from streamer.codec import ReadingDecoder
    from streamer.scoring.pipeline import ScoringPipeline

    config = point_config(base, point)
    readings = config.readings
    channels = list(readings.channels)
    decoder = ReadingDecoder(channels, device_id_pattern=readings.device_id_pattern,
                             max_message_bytes=readings.max_message_bytes,
                             max_future_ms=readings.max_future_ms)
    pipeline = ScoringPipeline(config)
    rng = np.random.default_rng(seed)
    batch = min(config.batching.max_batch, point.devices)
    feed = _Feed(point.devices, batch, channels, rng)

    # Priming: admit every device (slots 0..devices-1) with one reading each.
    for start in range(0, point.devices, batch):
        ids = np.arange(start, min(start + batch, point.devices), dtype=np.int64)
        pipeline.score(decoder.decode(feed.records(ids, np.zeros(len(ids), dtype=np.int64))).readings)
    if point.shadow:
        # The candidate (the same bundle: the same work as any) starts before the steady state,
        # so the template devices warm it up too and its state is copied to the fleet with the rest.
        from streamer.scoring.lstm import LSTMPredictor
        from streamer.scoring.shadow import ShadowScorer

        assert isinstance(pipeline.predictor, LSTMPredictor)  # noqa: S101  # point_config made it so
        running = pipeline.predictor
        shadow = ShadowScorer(config, pipeline.registry, running.bundle, lambda: running)
        while not shadow.rebuild_next(point.devices):
            pass
        pipeline.shadow = shadow
    steady_state(pipeline, decoder, feed, point.devices, rng)
    for _ in range(warmup_calls):
        pipeline.score(decoder.decode(feed.next_batch()).readings)
    if on_primed is not None:
        on_primed()

    decode_s = score_s = model_s = 0.0
    calls = alerts = count = shadow_scored = 0
    while decode_s + score_s < seconds or calls < min_calls:
        records = feed.next_batch()
        started = time.perf_counter()
        decoded = decoder.decode(records)
        decoded_at = time.perf_counter()
        result = pipeline.score(decoded.readings)
        scored_at = time.perf_counter()
        if decoded.rejections or result.rejections:
            raise RuntimeError(f"{point.label()}: the benchmark's own readings were rejected: "
                               f"{(decoded.rejections + result.rejections)[:3]}")
        decode_s += decoded_at - started
        score_s += scored_at - decoded_at
        model_s += result.model_seconds
        calls += 1
        count += len(records)
        alerts += len(result.alerts)
        shadow_scored += result.shadow.scored if result.shadow is not None else 0
    elapsed = decode_s + score_s
    predictor = pipeline.predictor
    bundle = getattr(predictor, "bundle", None)
    return {
        "mode": point.mode,
        "backend": point.backend,
        "devices": point.devices,
        "shadow_fraction": point.shadow,
        "shadow_scored_share": round(shadow_scored / count, 4),
        "batch": batch,
        "readings_per_s": round(count / elapsed, 1),
        "decode_share": round(decode_s / elapsed, 4),
        "model_share": round(model_s / elapsed, 4),
        "pipeline_share": round((score_s - model_s) / elapsed, 4),
        "seconds": round(elapsed, 4),
        "calls": calls,
        "alerts": alerts,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "state_table_mb": round(_state_bytes(pipeline) / MIB, 2),
        "threshold_method": pipeline.threshold.method,
        "bundle_version": predictor.version,
        "window": getattr(bundle.metadata, "window", None) if bundle is not None else None,
        "keras_backend": keras_backend(),
        "blas_threads": blas_threads(),
        **machine_record(),
    }


def _state_bytes(pipeline: ScoringPipeline) -> int:
    from streamer.scoring.lstm import LSTMPredictor

    predictor = pipeline.predictor
    table = pipeline.registry.table
    if isinstance(predictor, LSTMPredictor):
        return state_table_bytes(table, predictor)
    return table.nbytes()


# --- in the parent -------------------------------------------------------------------------------


def run_point(config: Config, point: PipelinePoint, *, seconds: float, blas_threads: int | None = None,
              timeout_s: float = WORKER_TIMEOUT_S) -> Record:
    """Measure ``point`` in a fresh interpreter and return its record.

    Raises:
        WorkerFailedError: The worker failed; the message ends with its stderr.
    """
    with tempfile.TemporaryDirectory(prefix="streamer-bench-") as scratch:
        out = Path(scratch) / "record.json"
        config_path = Path(scratch) / "config.json"
        write_config_file(config, config_path)
        command = [sys.executable, "-m", "streamer.lab.bench.pipeline_worker", "--config", str(config_path),
                   "--mode", point.mode, "--backend", point.backend, "--devices", str(point.devices),
                   "--seconds", str(seconds), "--shadow", str(point.shadow), "--out", str(out)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        if blas_threads is not None:
            env.update(dict.fromkeys(BLAS_THREAD_VARIABLES, str(blas_threads)))
        try:
            completed = subprocess.run(  # noqa: S603  # our own interpreter running our own module
                command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
        except subprocess.TimeoutExpired as exc:
            raise WorkerFailedError(f"{point.label()}: no result after {timeout_s:.0f} s") from exc
        if completed.returncode != 0 or not out.exists():
            tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
            raise WorkerFailedError(f"{point.label()}: worker exited {completed.returncode}\n{tail}")
        record: Record = json.loads(out.read_text(encoding="utf-8"))
    return record


def run_sweep(config: Config, points: Iterable[PipelinePoint], *, seconds: float,
              blas_threads: int | None = None, on_record: Callable[[Record], None] | None = None,
              on_failure: Callable[[PipelinePoint, str], None] | None = None,
              ) -> tuple[list[Record], list[tuple[PipelinePoint, str]]]:
    """Measure each point in its own worker; a failed point is reported, not fatal."""
    records: list[Record] = []
    failures: list[tuple[PipelinePoint, str]] = []
    for point in points:
        try:
            record = run_point(config, point, seconds=seconds, blas_threads=blas_threads)
        except WorkerFailedError as exc:
            failures.append((point, str(exc)))
            if on_failure is not None:
                on_failure(point, str(exc))
            continue
        records.append(record)
        if on_record is not None:
            on_record(record)
    return records, failures
