"""Every dashboard query and alert rule, evaluated by a real Prometheus scraping the real daemon.

One scenario per module: ``streamer run`` against the session broker, a
Prometheus server (Debian's) scraping it every second with deploy/prometheus/rules.yml
loaded, and ~10 s of readings from a small fleet in real time, a few of them
malformed. Then each expression of the Grafana dashboard and of the rules goes
through ``/api/v1/query``: it must parse, and the panels that should show data
must return some.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml
from aiokafka import AIOKafkaProducer

from streamer.codec import encode_reading
from streamer.config import Config

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DEVICES = 30
STEPS = 40
STEP_S = 0.25
MALFORMED_EVERY = 8  # steps: one malformed record now and then, so rejected has a rate
# Grafana variables, as the dashboard resolves them with job=streamer and instance=All.
VARIABLES = {"$__rate_interval": "1m", "$job": "streamer", "$instance": ".+"}
# No anomaly is injected and no feedback given, so these panels may rightly be empty.
MAY_BE_EMPTY = ("streamer_alerts_total", "streamer_event_to_alert_seconds", "streamer_feedback_applied_total",
                "streamer_shadow_feedback_total")


class Prometheus(Protocol):
    """What the ``prometheus_factory`` fixture returns."""

    url: str

    def api(self, path: str, **params: str) -> dict[str, Any]: ...

    def query(self, expr: str) -> dict[str, Any]: ...


@dataclass
class Stack:
    """The daemon, the Prometheus scraping it, and how many records were produced."""

    config: Config
    prometheus: Prometheus
    produced: int


def _dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "streamer.json").read_text())
    out: list[tuple[str, str]] = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in VARIABLES.items():
                expr = expr.replace(variable, value)
            out.append((f"{panel['title']} / {target['refId']}", expr))
    return out


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


async def _produce(config: Config) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, linger_ms=5)
    await producer.start()
    count = 0
    try:
        for step in range(STEPS):
            ts = int(time.time() * 1000)
            for d in range(DEVICES):
                device_id = f"dev-{d:05d}"
                value = 20.0 + d + 0.5 * ((step * 7 + d) % 5)
                await producer.send(config.kafka.input_topic, key=device_id.encode(),
                                    value=encode_reading(device_id, ts, value))
                count += 1
            if step % MALFORMED_EVERY == 0:
                await producer.send(config.kafka.input_topic, key=b"dev-00000", value=b"{not json")
                count += 1
            await producer.flush()
            await asyncio.sleep(STEP_S)
    finally:
        await producer.stop()
    return count


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _scalar(prometheus: Prometheus, expr: str) -> float:
    result = prometheus.query(expr)["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def _wait_for(condition: Callable[[], bool], timeout_s: float, message: str,
              process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{message}: daemon exited with {process.returncode}")
        if condition():
            return
        time.sleep(0.25)
    pytest.fail(message)


@pytest.fixture(scope="module")
def stack(config_factory: Callable[..., Config], write_config: Callable[[Config, Path], Path],
          prometheus_factory: Callable[[list[str], list[Path]], Prometheus],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = config_factory(predictor={"kind": "baseline"}, thresholds={"warmup": 10},
                            metrics={"refresh_interval_s": 0.5})
    workdir = tmp_path_factory.mktemp("daemon")
    config_path = write_config(config, workdir / "config.yaml")
    log_file = (workdir / "daemon.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "streamer", "run", "--config", str(config_path)],
                               stdout=log_file, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        prometheus = prometheus_factory([f"127.0.0.1:{config.metrics.port}"],
                                        [DEPLOY / "prometheus" / "rules.yml"])
        _wait_for(lambda: _ready(config.metrics.port), 60, "daemon never became ready", process)
        produced = asyncio.run(_produce(config))
        # Prometheus has scraped everything the daemon handled, and several times over.
        _wait_for(lambda: _scalar(prometheus, 'sum(streamer_readings_consumed_total{job="streamer"})')
                  >= produced, 30, "Prometheus never saw every record consumed", process)
        _wait_for(lambda: _scalar(prometheus, 'count_over_time(up{job="streamer"}[1m])') >= 5, 30,
                  "Prometheus scraped the daemon fewer than 5 times", process)
        yield Stack(config, prometheus, produced)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()


def test_prometheus_scrapes_the_daemon(stack: Stack) -> None:
    up = stack.prometheus.query('up{job="streamer"}')["data"]["result"]
    assert [sample["value"][1] for sample in up] == ["1"]
    assert _scalar(stack.prometheus, "sum(streamer_readings_rejected_total)") == STEPS // MALFORMED_EVERY


@pytest.mark.parametrize(("panel", "expr"), _dashboard_exprs())
def test_dashboard_query_parses_and_has_data(stack: Stack, panel: str, expr: str) -> None:
    assert "$" not in expr, f"{panel}: unresolved Grafana variable"
    answer = stack.prometheus.query(expr)
    assert answer["status"] == "success", f"{panel}: {answer.get('error')}"
    if not any(name in expr for name in MAY_BE_EMPTY):
        assert answer["data"]["result"], f"{panel}: no data for {expr}"


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: str(rule["alert"]))
def test_rule_expression_parses(stack: Stack, rule: dict[str, Any]) -> None:
    answer = stack.prometheus.query(rule["expr"])
    assert answer["status"] == "success", f"{rule['alert']}: {answer.get('error')}"
    assert answer["data"]["resultType"] == "vector"


def test_prometheus_loaded_every_rule_healthy(stack: Stack) -> None:
    expected = {rule["alert"] for rule in _rules()}
    deadline = time.monotonic() + 10
    while True:
        groups = stack.prometheus.api("rules")["data"]["groups"]
        loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
        if all(rule["health"] == "ok" for rule in loaded.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [group["name"] for group in groups] == ["streamer"]
    assert set(loaded) == expected
    for name, rule in loaded.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
        assert rule["type"] == "alerting"
