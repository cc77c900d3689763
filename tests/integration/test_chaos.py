"""``streamer chaos`` as a user runs it, in a very short configuration (well under 90 s).

Its own embedded broker (the scenario freezes the broker, so never the
session's shared one), two daemons, one SIGKILL, one SIGTERM, one outage,
and two model swaps (the registry's current promoted to a relabelled copy,
then rolled back).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

KEYS = ("verdict", "kills", "outages", "readings", "readings_accounted", "injected_anomalies",
        "alerted_anomalies", "duplicate_alerts")


def test_short_chaos_run_delivers_everything(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    result = subprocess.run(
        [sys.executable, "-m", "streamer", "chaos", "--quick", "--duration", "25", "--devices", "20",
         "--daemons", "2", "--kills", "1", "--terms", "1", "--outages", "1", "--swaps", "2", "--seed", "3",
         "--workdir", str(tmp_path / "work"), "--json", str(out)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    for key in KEYS:
        assert key in report, key
    assert report["verdict"] == "ALL-DELIVERED", (report["reasons"], result.stderr[-3000:])
    assert result.returncode == 0
    assert (report["kills"], report["terms"], report["outages"], report["swaps"]) == (1, 1, 1, 2)
    # Every daemon that was killed or stopped came back: 2 slots, 2 restarts.
    assert len(report["exits"]) == 4
    assert report["readings"] > 0
    assert report["readings_accounted"] == report["readings"]
    assert report["hostile_records"] > 0
    assert report["dead_letters"] >= report["hostile_records"]
    assert report["injected_anomalies"] > 0
    assert report["alerted_anomalies"] == report["reference_alerted_anomalies"]
    assert report["alerts_missing"] == report["alerts_extra"] == 0
    # Both daemons followed the registry: each swapped at least once (a lower bound: a SIGKILLed
    # daemon's last swaps may go unread), and every alert names one of the registry's versions.
    assert report["model_swaps_seen"] >= 2
    assert report["registry_current_at_end"] == report["registry_versions"][0]  # promoted, rolled back
    assert set(report["alert_model_versions"]) <= set(report["registry_versions"])
    assert report["alerts_of_unknown_versions"] == 0
