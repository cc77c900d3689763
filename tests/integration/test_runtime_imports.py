"""`streamer run` in a fresh interpreter loads none of the lab and no TensorFlow.

The daemon runs as users start it (`python -m streamer run`, default predictor:
the shipped LSTM bundle on the numpy backend) against the session's broker,
scores readings, and drains on SIGTERM. ``-X importtime`` makes the
interpreter itself list every module it imported, from start to exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streamer.codec import encode_reading
from streamer.config import Config

pytestmark = pytest.mark.integration

# The lab's packages, and the frameworks only training and the other backends load.
FORBIDDEN = ("streamer.lab", "tensorflow", "keras")
IMPORT_LINE = re.compile(r"^import time:\s+\d+\s+\|\s+\d+\s+\|\s+(\S+)\s*$")
READINGS = 200


def imported_modules(log: str) -> set[str]:
    """Module names from the ``-X importtime`` lines of a process log."""
    return {match.group(1) for line in log.splitlines() if (match := IMPORT_LINE.match(line))}


def test_importtime_lines_are_parsed() -> None:
    log = ("import time: self [us] | cumulative | imported package\n"
           "import time:       120 |        120 |   streamer.runtime.application\n"
           "some log line\n")
    assert imported_modules(log) == {"streamer.runtime.application"}


def metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


async def produce(config: Config) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for i in range(READINGS):
            device = f"dev-{i % 5}"
            await producer.send(config.kafka.input_topic, key=device.encode(),
                                value=encode_reading(device, 1_700_000_000_000 + i * 1000, float(i % 7)))
        await producer.flush()
    finally:
        await producer.stop()


def test_the_daemon_imports_no_lab_module_and_no_tensorflow(
    config_factory: Callable[..., Config], write_config: Callable[[Config, Path], Path], tmp_path: Path,
) -> None:
    config = config_factory()
    port = config.metrics.port
    log_path = tmp_path / "daemon.log"
    argv = [sys.executable, "-X", "importtime", "-m", "streamer", "run",
            "--config", str(write_config(config, tmp_path / "config.yaml"))]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        consumed = 0.0
        asyncio.run(produce(config))
        while time.monotonic() < deadline and consumed < READINGS:
            assert process.poll() is None, log_path.read_text()[-3000:]
            with contextlib.suppress(OSError):  # not serving /metrics yet
                consumed = metric(port, "streamer_readings_consumed_total")
            time.sleep(0.2)
        assert consumed >= READINGS, log_path.read_text()[-3000:]
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    modules = imported_modules(log_path.read_text())
    assert "streamer.runtime.application" in modules and "streamer.scoring.lstm" in modules
    assert sorted(m for m in modules if m.startswith(FORBIDDEN)) == []
