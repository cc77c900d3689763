"""Throughput and memory of the LSTM predictor, per mode, backend, batch and fleet size.

Each configuration runs in a fresh interpreter (``python -m
streamer.lab.bench.model_worker``), so its peak RSS belongs to that
configuration alone and no backend's imports or caches leak into another's.
The worker loads the bundle, builds a slot table of ``devices`` slots and an
:class:`~streamer.scoring.lstm.LSTMPredictor`, brings every device to steady
state (see :func:`_prime`), then times
``predictor.observe`` on batches of distinct slots taken in turn from a
random permutation of the fleet.

A record is a plain dict (the JSON written by ``streamer bench model
--json`` is a list of them)::

    mode, backend, batch, devices      the configuration
    points_per_s                       readings observed per second
    seconds, calls                     the timed span and observe calls in it
    peak_rss_mb                        peak resident memory of the worker, MiB
    state_table_mb                     slot table plus the backend's state table, MiB
    machine                            CPU, cores, memory, Python/numpy/TensorFlow versions
    keras_backend                      keras.config.backend(), or null where Keras was not imported
    blas_threads                       BLAS thread cap from the environment, null: one per core
    speedup_vs_window_tensorflow       stateful records: points/s over window/tensorflow at the
                                       same batch and devices (null when that was not measured)
    bundle_version, units, layers, window
"""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    # Type-only: importing them at run time pulls in Keras (models.bundle), which
    # the parent process of a sweep does not need.
    from models.backends import BackendName
    from streamer.scoring.lstm import LSTMPredictor, PredictorMode
    from streamer.state.slot_table import SlotTable

MODES: tuple[PredictorMode, ...] = ("window", "stateful")
BACKENDS: tuple[BackendName, ...] = ("numpy", "tensorflow", "keras")
WARMUP_CALLS = 3  # the first calls trace tf.functions and fault pages in
MIN_CALLS = 5
# Priming observes every device once, in chunks no larger than the largest batch.
PRIME_CHUNK = 65_536
# Window mode at batch 1 is per-call overhead; the fleet size does not change it.
WINDOW_BATCH_ONE_DEVICES = 1_000
# The keras backend updates its state table with a functional scatter, which
# copies the whole table on every call: at a million devices that is minutes per point.
KERAS_MAX_DEVICES = 100_000
# A configuration that has not finished by then is reported as failed.
WORKER_TIMEOUT_S = 900.0
MIB = 1 << 20
# Fields LSTMPredictor declares in the slot table: readings seen per device,
# and the window-mode ring buffer (prefix "lstm_u").
COUNT_FIELD = "lstm_count"
RING_FIELD = "lstm_u"
RING_FILLED_FIELD = "lstm_u_filled"
# Environment variables that cap the BLAS thread pool numpy's matmuls use.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# The ratio the command reports: O(1) stateful numpy against the O(window) Keras path.
KEY_BATCH = 512

Record = dict[str, Any]


@dataclass(frozen=True)
class BenchPoint:
    """One configuration to measure."""

    mode: PredictorMode
    backend: BackendName
    batch: int
    devices: int

    def label(self) -> str:
        """Short name for logs, e.g. ``stateful/numpy batch 512 x 100,000 devices``."""
        return f"{self.mode}/{self.backend} batch {self.batch:,} x {self.devices:,} devices"


@dataclass(frozen=True)
class Sweep:
    """A grid of configurations and how long to time each."""

    modes: tuple[PredictorMode, ...]
    backends: tuple[BackendName, ...]
    batches: tuple[int, ...]
    devices: tuple[int, ...]
    seconds: float


FULL_SWEEP = Sweep(MODES, BACKENDS, (1, 64, 512, 4096, 65_536), (1_000, 100_000, 1_000_000), seconds=3.0)
# Every mode and backend at the point the key ratio is quoted for.
QUICK_SWEEP = Sweep(MODES, BACKENDS, (KEY_BATCH,), (100_000,), seconds=2.0)


@dataclass(frozen=True)
class Skip:
    """A configuration of the grid that is not measured, and why."""

    point: BenchPoint
    reason: str


@dataclass(frozen=True)
class Failure:
    """A configuration whose worker failed or timed out."""

    point: BenchPoint
    reason: str


def skip_reason(point: BenchPoint) -> str | None:
    """Why ``point`` is not measured, or None.

    >>> skip_reason(BenchPoint("stateful", "numpy", batch=4096, devices=1000))
    'batch larger than the fleet'
    >>> skip_reason(BenchPoint("stateful", "numpy", batch=512, devices=1000)) is None
    True
    """
    if point.batch > point.devices:
        return "batch larger than the fleet"
    if point.mode == "window" and point.batch == 1 and point.devices != WINDOW_BATCH_ONE_DEVICES:
        return f"window mode at batch 1 is measured at {WINDOW_BATCH_ONE_DEVICES:,} devices only"
    if point.backend == "keras" and point.devices > KERAS_MAX_DEVICES:
        return (f"keras backend only up to {KERAS_MAX_DEVICES:,} devices "
                "(its functional scatter copies the whole state table every call)")
    return None


def plan(sweep: Sweep) -> tuple[list[BenchPoint], list[Skip]]:
    """The configurations of ``sweep`` to measure, and those skipped with their reasons."""
    points: list[BenchPoint] = []
    skipped: list[Skip] = []
    for mode, backend, devices, batch in itertools.product(sweep.modes, sweep.backends, sweep.devices,
                                                           sweep.batches):
        point = BenchPoint(mode, backend, batch, devices)
        reason = skip_reason(point)
        if reason is None:
            points.append(point)
        else:
            skipped.append(Skip(point, reason))
    return points, skipped


# --- in the worker -------------------------------------------------------------------------------


def measure(bundle_path: str | Path, point: BenchPoint, *, seconds: float, min_calls: int = MIN_CALLS,
            warmup_calls: int = WARMUP_CALLS, seed: int = 0) -> Record:
    """Time ``observe`` for one configuration in this process and return its record.

    Run it in a fresh process (:func:`run_point`) for a meaningful ``peak_rss_mb``.

    Args:
        bundle_path: A bundle directory, or ``"default"``.
        point: The configuration; ``batch`` must not exceed ``devices``.
        seconds: Time at least this long ...
        min_calls: ... and at least this many calls.
        warmup_calls: Untimed calls first.
        seed: Seeds the permutation, the readings and the primed windows.
    """
    from models.bundle import load_bundle
    from streamer.scoring.lstm import LSTMPredictor
    from streamer.state.slot_table import SlotTable

    if point.batch > point.devices:
        raise ValueError(f"{point.label()}: batch larger than the fleet")
    bundle = load_bundle(bundle_path)
    channels = bundle.metadata.architecture.channels
    rng = np.random.default_rng(seed)
    table = SlotTable(point.devices)
    predictor = LSTMPredictor(table, bundle, mode=point.mode, backend=point.backend)
    _prime(predictor, table, point.devices, channels, rng)

    batch, devices = point.batch, point.devices
    # Consecutive chunks of a permutation, wrapping: the tail repeats the head so
    # every chunk is one slice (distinct slots, no copy inside the timed loop).
    permutation = rng.permutation(devices).astype(np.intp)
    order = np.concatenate([permutation, permutation[:batch]])
    values = rng.normal(10.0, 2.0, size=(devices + batch, channels))
    position = 0

    def call() -> None:
        nonlocal position
        predictor.observe(order[position:position + batch], values[position:position + batch])
        position = (position + batch) % devices

    for _ in range(warmup_calls):
        call()
    calls = 0
    start = time.perf_counter()
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= min_calls:
            break
    arch = bundle.metadata.architecture
    return {
        "mode": point.mode,
        "backend": point.backend,
        "batch": batch,
        "devices": devices,
        "points_per_s": round(calls * batch / elapsed, 1),
        "seconds": round(elapsed, 4),
        "calls": calls,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "state_table_mb": round(state_table_bytes(table, predictor) / MIB, 2),
        "machine": machine_description(),
        "keras_backend": _keras_backend(),
        "blas_threads": _blas_threads(),
        "speedup_vs_window_tensorflow": None,
        "bundle_version": bundle.version,
        "units": arch.units,
        "layers": arch.layers,
        "window": bundle.metadata.window,
    }


def _prime(predictor: LSTMPredictor, table: SlotTable, devices: int, channels: int,
           rng: np.random.Generator) -> None:
    """Bring every device to steady state, so each timed call does a live fleet's work.

    Every device is observed once (its backend rows exist and hold a state).
    Its reading count is then set past one window: in stateful mode both
    staggered states run from ``window / 2`` readings on, so a device that has
    read only a few readings costs half the model work of a live one, and a
    short benchmark would otherwise never leave that warm-up. In window mode
    every window is filled, so each call runs the model.
    """
    for start in range(0, devices, PRIME_CHUNK):
        slots = np.arange(start, min(start + PRIME_CHUNK, devices), dtype=np.intp)
        predictor.observe(slots, rng.normal(10.0, 2.0, size=(len(slots), channels)))
    window = predictor.window
    # Random phases: restarts spread over calls as in a fleet that started at different times.
    table[COUNT_FIELD][:devices] = rng.integers(window, 2 * window, size=devices)
    if predictor.mode == "window":
        ring = table[RING_FIELD]
        ring[:devices] = rng.standard_normal((devices, *ring.shape[1:]), dtype=np.float32)
        table[RING_FILLED_FIELD][:devices] = window


def state_table_bytes(table: SlotTable, predictor: LSTMPredictor) -> int:
    """The slot table plus the backend's state tables (``h`` and ``c``, or the numpy backend's ``state``)."""
    total = table.nbytes()
    for name in ("h", "c", "state"):
        state = getattr(predictor.backend, name, None)
        if state is None:
            continue
        nbytes = getattr(state, "nbytes", None)
        if isinstance(nbytes, int):  # numpy
            total += nbytes
        else:  # tf.Variable / backend tensor: float32 (see models.backends)
            total += int(np.prod(tuple(int(d) for d in state.shape))) * np.dtype(np.float32).itemsize
    return total


def peak_rss_mb() -> float:
    """Peak resident memory of this process, MiB.

    Linux's ``ru_maxrss`` survives ``execve``: a child started by a large
    parent reports at least the parent's peak. ``VmHWM`` in
    ``/proc/self/status`` covers this process image only, so it is used where
    it exists.
    """
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        status = ""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def machine_description() -> str:
    """CPU, cores, memory and library versions (no host name).

    >>> "cores" in machine_description() and "numpy" in machine_description()
    True
    """
    cpu = platform.processor() or _cpu_model()
    parts = [f"{platform.machine()} {os.cpu_count()} cores", cpu, _total_memory()]
    try:
        tensorflow = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        tensorflow = "not installed"
    versions = f"Python {platform.python_version()}, numpy {np.__version__}, tensorflow {tensorflow}"
    return ", ".join(part for part in parts if part) + "; " + versions


def _cpu_model() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return ""


def _total_memory() -> str:
    try:
        meminfo = Path("/proc/meminfo").read_text(encoding="ascii")
    except OSError:
        return ""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / (1 << 20):.1f} GiB RAM"  # kB
    return ""


def _blas_threads() -> int | None:
    """The BLAS thread cap set in the environment; None: the library's default (one per core)."""
    for name in BLAS_THREAD_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def _keras_backend() -> str | None:
    if "keras" not in sys.modules:
        return None
    import keras

    backend: str = keras.config.backend()
    return backend


# --- in the parent -------------------------------------------------------------------------------


class WorkerFailedError(RuntimeError):
    """The worker process exited with an error, wrote no record, or timed out."""


def run_point(bundle_path: Path, point: BenchPoint, *, seconds: float, blas_threads: int | None = None,
              timeout_s: float = WORKER_TIMEOUT_S) -> Record:
    """Measure ``point`` in a fresh interpreter and return its record.

    ``blas_threads`` caps numpy's BLAS thread pool in the worker (None: as
    inherited from this environment).

    Raises:
        WorkerFailedError: The worker failed; the message ends with its stderr.
    """
    with tempfile.TemporaryDirectory(prefix="streamer-bench-") as scratch:
        out = Path(scratch) / "record.json"
        command = [sys.executable, "-m", "streamer.lab.bench.model_worker", "--bundle", str(bundle_path),
                   "--mode", point.mode, "--backend", point.backend, "--batch", str(point.batch),
                   "--devices", str(point.devices), "--seconds", str(seconds), "--out", str(out)]
        # TensorFlow's C++ start-up chatter is noise here; real errors still reach stderr.
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


def run_sweep(bundle_path: Path, points: Iterable[BenchPoint], *, seconds: float,
              blas_threads: int | None = None, on_record: Callable[[Record], None] | None = None,
              on_failure: Callable[[Failure], None] | None = None) -> tuple[list[Record], list[Failure]]:
    """Measure each point in its own worker; a failed point is reported, not fatal."""
    records: list[Record] = []
    failures: list[Failure] = []
    for point in points:
        try:
            record = run_point(bundle_path, point, seconds=seconds, blas_threads=blas_threads)
        except WorkerFailedError as exc:
            failure = Failure(point, str(exc))
            failures.append(failure)
            if on_failure is not None:
                on_failure(failure)
            continue
        records.append(record)
        if on_record is not None:
            on_record(record)
    add_speedups(records)
    return records, failures


def add_speedups(records: list[Record]) -> None:
    """Set ``speedup_vs_window_tensorflow`` on stateful records that have a window/tensorflow peer.

    >>> records = [{"mode": "window", "backend": "tensorflow", "batch": 8, "devices": 9, "points_per_s": 2.0},
    ...            {"mode": "stateful", "backend": "numpy", "batch": 8, "devices": 9, "points_per_s": 5.0}]
    >>> add_speedups(records)
    >>> records[1]["speedup_vs_window_tensorflow"], records[0]["speedup_vs_window_tensorflow"]
    (2.5, None)
    """
    reference = {(r["batch"], r["devices"]): r["points_per_s"] for r in records
                 if r["mode"] == "window" and r["backend"] == "tensorflow"}
    for record in records:
        peer = reference.get((record["batch"], record["devices"]))
        record["speedup_vs_window_tensorflow"] = (
            round(record["points_per_s"] / peer, 3) if record["mode"] == "stateful" and peer else None)


def key_ratios(records: list[Record], batch: int = KEY_BATCH) -> list[tuple[int, float, float, float]]:
    """``(devices, stateful/numpy points/s, window/tensorflow points/s, ratio)`` at ``batch``, per fleet size.

    >>> key_ratios([
    ...     {"mode": "window", "backend": "tensorflow", "batch": 512, "devices": 9, "points_per_s": 2.0},
    ...     {"mode": "stateful", "backend": "numpy", "batch": 512, "devices": 9, "points_per_s": 5.0}])
    [(9, 5.0, 2.0, 2.5)]
    """
    def rates(mode: str, backend: str) -> dict[int, float]:
        return {r["devices"]: r["points_per_s"] for r in records
                if r["mode"] == mode and r["backend"] == backend and r["batch"] == batch}

    stateful = rates("stateful", "numpy")
    window = rates("window", "tensorflow")
    return [(devices, stateful[devices], window[devices], stateful[devices] / window[devices])
            for devices in sorted(stateful.keys() & window.keys()) if window[devices] > 0]
