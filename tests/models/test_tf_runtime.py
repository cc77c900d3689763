"""TensorFlow loads without its start-up noise on stderr; real errors still show."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from models import tf_runtime

REPO = Path(__file__).resolve().parents[2]

# The start-up lines TensorFlow prints on a machine without a GPU (TF 2.21, CPU).
BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
ONEDNN = ("I0000 00:00:1796595397.979264    2915 port.cc:153] oneDNN custom operations are on. "
          "You may see slightly different numerical results.")
NO_DRIVERS = ("I0000 00:00:1796595397.979638    2915 cudart_stub.cc:31] Could not find cuda drivers "
              "on your machine, GPU will not be used.")
CUINIT = ("E0000 00:00:1796595401.438560    2915 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
          "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)")
FACTORY = ("E0000 00:00:1796595397.990000    2915 cuda_dnn.cc:8310] Unable to register cuDNN factory: "
           "Attempting to register factory for plugin cuDNN when one has already been registered")
REAL_ERROR = "E0000 00:00:1796595402.000000    2915 bfc_allocator.cc:10] Allocator ran out of memory"
STARTUP = [BANNER, ONEDNN, NO_DRIVERS, FACTORY, CUINIT]
NOISE_MARKERS = ("absl::InitializeLog", "oneDNN custom operations", "Could not find cuda drivers", "cuInit",
                 "factory", "TF-TRT", "computation placer")


def test_a_tensorflow_model_runs_without_start_up_noise() -> None:
    script = (
        "import numpy as np\n"
        "from models.architecture import ArchitectureSpec, build_forecaster\n"
        "model = build_forecaster(ArchitectureSpec(units=4))\n"
        "print(model(np.zeros((1, 3, 1), 'float32')).shape)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "tensorflow"
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, 3, 1)"
    assert not [marker for marker in NOISE_MARKERS if marker in done.stderr], done.stderr
    assert not re.search(r"^[IW]\d{4} ", done.stderr, re.MULTILINE), done.stderr


def test_a_real_error_inside_the_guard_still_reaches_stderr(capfd: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with tf_runtime.quiet_startup():
        os.write(2, "\n".join([*STARTUP, REAL_ERROR, "a Python warning, not TensorFlow's"]).encode() + b"\n")
    _, err = capfd.readouterr()
    assert err.splitlines() == [REAL_ERROR, "a Python warning, not TensorFlow's"]


def test_the_guard_restores_stderr_when_the_block_raises(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ImportError), tf_runtime.quiet_startup():
        os.write(2, f"{REAL_ERROR}\n".encode())
        raise ImportError("broken install")
    os.write(2, b"after\n")
    assert capfd.readouterr().err.splitlines() == [REAL_ERROR, "after"]


def test_a_user_level_of_zero_shows_every_line(capfd: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    with tf_runtime.quiet_startup():
        os.write(2, "\n".join(STARTUP).encode() + b"\n")
    assert capfd.readouterr().err.splitlines() == STARTUP


@pytest.mark.parametrize(("level", "kept"), [
    (None, [REAL_ERROR]),
    (1, ["W0000 00:00:1.0    1 a.cc:1] a warning", REAL_ERROR]),
    (3, []),
])
def test_lines_below_the_level_are_dropped(level: int | None, kept: list[str]) -> None:
    lines = ["I0000 00:00:1.0    1 a.cc:1] some info", "W0000 00:00:1.0    1 a.cc:1] a warning", REAL_ERROR]
    assert tf_runtime.startup_lines_to_keep(lines, level=level, gpu_driver=False) == kept


def test_a_failed_cuinit_is_kept_where_there_is_a_driver() -> None:
    assert tf_runtime.startup_lines_to_keep([CUINIT], level=None, gpu_driver=True) == [CUINIT]
    assert tf_runtime.startup_lines_to_keep([NO_DRIVERS, CUINIT], level=None, gpu_driver=True) == []
    assert tf_runtime.startup_lines_to_keep([CUINIT], level=None, gpu_driver=False) == []


def test_keras_backend_name_reads_the_variable_then_keras_json(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert tf_runtime.keras_backend_name() == "tensorflow"  # no keras.json
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
    assert tf_runtime.keras_backend_name() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert tf_runtime.keras_backend_name() == "torch"
