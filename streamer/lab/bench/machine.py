"""What every benchmark record says about the machine it ran on, and the load it was under."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from streamer.lab.bench.model import BLAS_THREAD_VARIABLES, machine_description

# Linux clock ticks per second, for /proc/<pid>/stat CPU times.
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (empty where the platform has none).

    On a shared machine this says how much of it the benchmark had.

    >>> len(load_average()) in (0, 3)
    True
    """
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return []


def machine_record() -> dict[str, Any]:
    """``machine`` (CPU, cores, memory, versions) and ``load_average`` at this moment."""
    return {"machine": machine_description(), "load_average": load_average()}


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds used so far by process ``pid`` (all its threads); None if gone.

    >>> (process_cpu_seconds(os.getpid()) or 0.0) >= 0.0
    True
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    # Fields after the command name (which may hold spaces) start after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _CLOCK_TICKS


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores have spent busy since boot (every process, not only ours); None off Linux.

    On a shared machine the difference between this and the benchmark's own
    processes is what the rest of the machine took.

    >>> (machine_busy_seconds() or 0.0) >= 0.0
    True
    """
    try:
        first = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0]
    except (OSError, IndexError):
        return None
    # cpu  user nice system idle iowait irq softirq steal guest guest_nice (proc(5))
    ticks = [int(value) for value in first.split()[1:9]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / _CLOCK_TICKS


def blas_threads() -> int | None:
    """The BLAS thread cap set in the environment; None: the library's default (one per core)."""
    for name in BLAS_THREAD_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def keras_backend() -> str | None:
    """``keras.config.backend()`` if Keras was imported in this process, else None."""
    if "keras" not in sys.modules:
        return None
    import keras

    backend: str = keras.config.backend()
    return backend
