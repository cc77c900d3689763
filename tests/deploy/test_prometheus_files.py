"""The Prometheus files in deploy/prometheus, checked and unit-tested by promtool.

promtool is Debian's (package ``prometheus``). ``promtool test rules`` runs
deploy/prometheus/rules_test.yml: synthetic series on which alerts must fire,
and healthy ones on which they must not.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERTS = {
    "StreamerDown", "StreamerNotReady", "StreamerLagGrowing", "StreamerLatencyHigh",
    "StreamerDeadLetterRate", "StreamerNoReadings", "StreamerCommitStalled", "StreamerEventLoopLag",
    "StreamerScoringPauses", "StreamerModelRefused",
}


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60,
                          check=False, cwd=PROMETHEUS_DIR)


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())
    groups: list[dict[str, Any]] = document["groups"]
    assert [g["name"] for g in groups] == ["streamer"]
    rules: list[dict[str, Any]] = groups[0]["rules"]
    return rules


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = _promtool(promtool, "check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(ALERTS)} rules found" in result.stdout


def test_promtool_accepts_the_config_and_the_rule_files_it_names(promtool: str) -> None:
    result = _promtool(promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_config_scrapes_the_compose_detector_service() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["rules.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "streamer"
    assert job["static_configs"] == [{"targets": ["detector:9108"]}]


def test_every_alert_has_severity_and_says_what_to_do() -> None:
    rules = _rules()
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["for"], rule["alert"]
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"][key].strip(), (rule["alert"], key)


def test_latency_rule_states_the_cloud_and_edge_objectives() -> None:
    (rule,) = [r for r in _rules() if r["alert"] == "StreamerLatencyHigh"]
    assert "> 0.2" in rule["expr"]
    assert "200 ms" in rule["annotations"]["description"]
    assert "50 ms" in rule["annotations"]["description"]


def test_rule_unit_tests_fire_the_key_alerts() -> None:
    """The unit-test file covers firing and silence, so promtool's SUCCESS means something."""
    document = yaml.safe_load((PROMETHEUS_DIR / "rules_test.yml").read_text())
    assert document["rule_files"] == ["rules.yml"]
    fired = {case["alertname"] for test in document["tests"] for case in test["alert_rule_test"]
             if case["exp_alerts"]}
    silent = {case["alertname"] for test in document["tests"] for case in test["alert_rule_test"]
              if not case["exp_alerts"]}
    assert {"StreamerDown", "StreamerDeadLetterRate", "StreamerCommitStalled",
            "StreamerScoringPauses", "StreamerModelRefused"} <= fired
    assert silent == ALERTS


def test_promtool_rule_unit_tests_pass(promtool: str) -> None:
    result = _promtool(promtool, "test", "rules", "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
