"""Structure of the Grafana dashboard and the metric names its queries (and the alert rules) use.

The set of names the daemon exports is read from a fresh ``Metrics()`` registry,
so a renamed or removed metric fails here instead of leaving an empty panel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamer.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "streamer.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
METRIC = re.compile(r"\bstreamer_[a-z0-9_]+")
SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def _exported() -> dict[str, str]:
    """Every sample name the daemon can export, mapped to its family name."""
    names: dict[str, str] = {}
    for family in Metrics().registry.collect():
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = family.name
        for sample in family.samples:
            names[sample.name] = family.name
    return names


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = _dashboard()["panels"]
    return panels


def _exprs() -> list[str]:
    return [t["expr"] for p in _panels() for t in p.get("targets", [])]


def _rule_exprs() -> list[str]:
    document = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    return [rule["expr"] for group in document["groups"] for rule in group["rules"]]


def test_exported_names_come_from_the_registry() -> None:
    names = _exported()
    assert names["streamer_readings_consumed_total"] == "streamer_readings_consumed"
    assert names["streamer_event_to_decision_seconds_bucket"] == "streamer_event_to_decision_seconds"
    assert "streamer_ready" in names
    assert "streamer_ready_total" not in names


def test_dashboard_header() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "streamer"
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["datasource"] == DATASOURCE


def test_panel_ids_are_unique_and_the_grid_has_no_overlap() -> None:
    panels = _panels()
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_every_panel_and_target_uses_the_datasource_variable() -> None:
    queried = [p for p in _panels() if p["type"] != "row"]
    assert len(queried) >= 20
    for panel in queried:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_every_variable_used_in_a_query_is_defined() -> None:
    defined = {v["name"] for v in _dashboard()["templating"]["list"]} | {"__rate_interval"}
    used = {m for expr in _exprs() for m in re.findall(r"\$\{?(\w+)", expr)}
    assert used
    assert used <= defined


@pytest.mark.parametrize(("source", "exprs"), [("dashboard", _exprs), ("rules", _rule_exprs)],
                         ids=["dashboard", "rules"])
def test_every_metric_in_a_query_is_exported_by_the_daemon(source: str,
                                                          exprs: Callable[[], list[str]]) -> None:
    exported = _exported()
    referenced = {name for expr in exprs() for name in METRIC.findall(expr)}
    assert referenced, source
    unknown = sorted(referenced - exported.keys())
    assert not unknown, f"{source} queries metrics the daemon does not export: {unknown}"


def test_dashboard_shows_every_metric_family() -> None:
    exported = _exported()
    shown = {exported[name] for expr in _exprs() for name in METRIC.findall(expr) if name in exported}
    assert set(exported.values()) - shown == set()


def test_histograms_are_read_as_quantiles_and_averages() -> None:
    exprs = _exprs()
    for quantile in ("0.5", "0.99", "0.999"):
        assert any(f"histogram_quantile({quantile}," in e and "streamer_event_to_decision_seconds_bucket" in e
                   for e in exprs), quantile
    assert any("streamer_batch_size_sum" in e and "streamer_batch_size_count" in e
               and "streamer_batch_capacity" in e for e in exprs)
    assert any("time() - " in e and "streamer_last_commit_timestamp_seconds" in e for e in exprs)
