"""Loading TensorFlow (and Keras on it) once, without its start-up noise on stderr.

TensorFlow's C++ runtime writes to the process' stderr (fd 2) while it loads
and when it first looks for devices: absl's "before InitializeLog" banner,
oneDNN notes, and on a machine without a GPU "Could not find cuda drivers" and
an E-level "failed call to cuInit". ``TF_CPP_MIN_LOG_LEVEL`` does not reach
the lines logged before absl is initialised (TensorFlow 2.21 prints them even
at level 3), and level 3 would hide every real error along with the cuInit
line.

So :func:`load_tensorflow` imports TensorFlow and lists the GPUs (where cuInit
runs) inside :func:`quiet_startup`, which sends fd 2 to a temporary file and,
on exit, restores it and writes back every captured line that
:func:`startup_lines_to_keep` keeps: all but known start-up noise and, for
TensorFlow's own log lines, those below ``TF_CPP_MIN_LOG_LEVEL`` (the lines
TensorFlow drops itself once it has read the variable).

``TF_CPP_MIN_LOG_LEVEL`` set by the user is kept, and ``0`` shows every line,
noise included; unset, it becomes ``2`` (TensorFlow's errors only).
:func:`load_keras` loads TensorFlow this way first when Keras will run on it,
and never when Keras runs on another backend.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# Errors and fatal lines only: info and warnings are start-up chatter.
DEFAULT_LEVEL = 2

# Lines TensorFlow prints at start-up that say nothing is wrong (the GPU
# factory and TensorRT lines come from GPU builds on machines without one).
NOISE = tuple(re.compile(pattern) for pattern in (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"Could not find cuda drivers on your machine",
    r"Unable to register cu(?:DNN|FFT|BLAS) factory",
    r"Attempting to register factory for plugin cu(?:DNN|FFT|BLAS) when one has already been registered",
    r"computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"rebuild TensorFlow with the appropriate compiler flags",
))
# A failed cuInit is noise only where there is no NVIDIA driver to initialise;
# on a machine with one it is a real error and is kept.
CUINIT_FAILED = re.compile(r"failed call to cuInit")
NO_DRIVER = re.compile(r"Could not find cuda drivers on your machine")
_NVIDIA_DRIVER = Path("/proc/driver/nvidia")
# TensorFlow's log lines: "I0000 00:00:1796595397.979264    2915 port.cc:153] ..."
# (absl; before InitializeLog the seconds are the epoch's) and
# "2024-01-01 12:00:00.000000: I tensorflow/core/util/port.cc:113] ..." (before
# TensorFlow 2.16).
_LOG_LINE = re.compile(r"^(?:(?P<absl>[IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ "
                       r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: (?P<glog>[IWEF]) )\S+:\d+\]")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}

def startup_lines_to_keep(lines: Sequence[str], *, level: int | None, gpu_driver: bool) -> list[str]:
    """The captured start-up lines worth showing.

    Args:
        lines: What was written to stderr, line by line.
        level: ``TF_CPP_MIN_LOG_LEVEL`` as the user set it; None: unset
            (:data:`DEFAULT_LEVEL` applies). At 0 every line is kept.
        gpu_driver: Whether the machine has an NVIDIA driver (then a failed
            cuInit is a real error).

    Returns:
        ``lines`` without known start-up noise and without TensorFlow log
        lines below the level.

    >>> startup_lines_to_keep(["I0000 00:00:1.2    7 port.cc:153] oneDNN custom operations are on.",
    ...                        "E0000 00:00:1.3    7 cuda_platform.cc:52] failed call to cuInit: 303",
    ...                        "E0000 00:00:1.4    7 kernel.cc:9] out of memory", "a Python warning"],
    ...                       level=None, gpu_driver=False)
    ['E0000 00:00:1.4    7 kernel.cc:9] out of memory', 'a Python warning']
    """
    if level == 0:
        return list(lines)
    minimum = DEFAULT_LEVEL if level is None else level
    no_driver = not gpu_driver or any(NO_DRIVER.search(line) for line in lines)
    kept = []
    for line in lines:
        match = _LOG_LINE.match(line)
        if match and _SEVERITY[match["absl"] or match["glog"]] < minimum:
            continue
        if any(pattern.search(line) for pattern in NOISE):
            continue
        if no_driver and CUINIT_FAILED.search(line):
            continue
        kept.append(line)
    return kept


@contextlib.contextmanager
def quiet_startup() -> Iterator[None]:
    """Capture fd 2 for the block; afterwards write back what :func:`startup_lines_to_keep` keeps.

    The whole process' fd 2 is captured, so a line another thread writes
    meanwhile comes out when the block ends. Reads ``TF_CPP_MIN_LOG_LEVEL`` on
    entry, as the user set it.
    """
    level = _user_level()
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to quieten
        yield
        return
    # A file rather than a pipe: a pipe nobody reads blocks the writer when full.
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines()
            kept = startup_lines_to_keep(lines, level=level, gpu_driver=_NVIDIA_DRIVER.exists())
            if kept:
                os.write(2, ("\n".join(kept) + "\n").encode())


@functools.cache
def load_tensorflow() -> ModuleType:
    """TensorFlow, imported and its devices initialised inside :func:`quiet_startup` (once a process)."""
    with quiet_startup():
        os.environ.setdefault(LEVEL_VARIABLE, str(DEFAULT_LEVEL))
        import tensorflow as tf

        # The first device query runs cuInit, which logs its failure on a
        # machine without a GPU.
        tf.config.list_physical_devices("GPU")
    module: ModuleType = tf
    return module


def load_keras() -> ModuleType:
    """Keras, after :func:`load_tensorflow` when its backend is TensorFlow."""
    if "keras" not in sys.modules and keras_backend_name() == "tensorflow":
        load_tensorflow()
    import keras

    module: ModuleType = keras
    return module


def keras_backend_name() -> str:
    """The backend Keras will load, read as Keras reads it, without importing Keras.

    ``KERAS_BACKEND`` first, then ``backend`` in ``keras.json`` (in
    ``KERAS_HOME``, default ``~/.keras``), then ``tensorflow``.
    """
    name = os.environ.get("KERAS_BACKEND")
    if name:
        return name
    home = os.environ.get("KERAS_HOME")
    if home is None:
        base = Path.home()
        home = str((base if os.access(base, os.W_OK) else Path("/tmp")) / ".keras")  # noqa: S108  # as Keras
    try:
        settings = json.loads((Path(home) / "keras.json").read_text())
    except (OSError, ValueError):
        return "tensorflow"
    backend = settings.get("backend") if isinstance(settings, dict) else None
    return backend if isinstance(backend, str) else "tensorflow"


def _user_level() -> int | None:
    value = os.environ.get(LEVEL_VARIABLE, "").strip()
    # TensorFlow reads a level it cannot parse as 0.
    return (int(value) if value.isdigit() else 0) if value else None
