"""deploy/alertmanager/alertmanager.yml, checked and routed by amtool (Debian's prometheus-alertmanager)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamer.config import AlertmanagerConfig
from tests.conftest import AlertmanagerTools

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "alertmanager" / "alertmanager.yml"
EPISODE = ["alertname=" + AlertmanagerConfig().alertname, "alert_id=55ee746e-bf48-57ad-90b6-4e27698229ad",
           "device=pump-17", "channel=value", "model_version=lstm-abc"]


def amtool(tools: AlertmanagerTools, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tools.amtool, *args], capture_output=True, text=True, timeout=60, check=False)


def test_amtool_accepts_the_shipped_config(alertmanager_tools: AlertmanagerTools) -> None:
    result = amtool(alertmanager_tools, "check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(("severity", "receiver"), [("critical", "pagerduty-anomalies"),
                                                    ("warning", "pagerduty-anomalies"),
                                                    ("info", "streamer-log")])
def test_anomalies_page_by_severity(alertmanager_tools: AlertmanagerTools, severity: str,
                                    receiver: str) -> None:
    result = amtool(alertmanager_tools, "config", "routes", "test", f"--config.file={CONFIG}",
                    f"--verify.receivers={receiver}", *EPISODE, f"severity={severity}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_other_alerts_do_not_page(alertmanager_tools: AlertmanagerTools) -> None:
    result = amtool(alertmanager_tools, "config", "routes", "test", f"--config.file={CONFIG}",
                    "--verify.receivers=streamer-log", "alertname=StreamerDown", "severity=critical")
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_pagerduty_incident_per_episode() -> None:
    document: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    route = next(r for r in document["route"]["routes"] if r["receiver"] == "pagerduty-anomalies")
    assert route["group_by"] == ["alert_id"]  # the group key, and so PagerDuty's dedup_key, is the episode
    receiver = next(r for r in document["receivers"] if r["name"] == "pagerduty-anomalies")
    pagerduty = receiver["pagerduty_configs"][0]
    assert pagerduty["send_resolved"] is True
    assert "dedup_key" in pagerduty["details"]["dedup_key"]
