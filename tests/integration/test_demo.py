"""``streamer demo`` as a user runs it: embedded broker, simulator, daemon, summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.embedded_broker import free_port

pytestmark = pytest.mark.integration


def test_demo_starts_its_own_broker_and_writes_a_summary(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    # Nothing listens on this port, so the demo must start the embedded broker.
    env = {**os.environ, "STREAMER__KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    result = subprocess.run(
        [sys.executable, "-m", "streamer", "demo", "--duration", "20", "--devices", "100",
         "--no-live", "--summary-json", str(summary_path)],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["broker"] == "embedded"
    for key in ("readings_sent", "readings_scored", "injected", "detected", "false_alerts", "latency_ms"):
        assert key in summary
    assert summary["readings_sent"] == 100 * 20 * 10
    handled = summary["readings_scored"] + summary["readings_warmup"] + summary["readings_rejected"]
    assert handled == summary["readings_sent"]
    # Flatlines too: the stuck-sensor detector (thresholds.stuck) catches what the residual cannot.
    for kind in ("spike", "level_shift", "flatline"):
        assert summary["injected"][kind] > 0
        assert summary["detected"][kind] / summary["injected"][kind] >= 0.9
    assert summary["latency_ms"]["p99"] is not None
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]
