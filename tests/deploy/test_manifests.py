"""The deployment kit in deploy/: compose, Dockerfiles, systemd units, Kubernetes manifests.

No image is built and no cluster is contacted (these machines have no Docker
engine). Instead every file is tied to the code it deploys: each configuration
goes through ``streamer.config.load_config`` with the environment the file gives
it, each command line through the real ``streamer`` argument parser, and each
health check command is run against the daemon's real probe server, healthy and
failing. Kubernetes manifests are validated against the API schemas
(kubernetes-validate), and the systemd units with ``systemd-analyze verify``.
"""

from __future__ import annotations

import argparse
import configparser
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streamer.cli import build_parser
from streamer.config import Config, load_config
from streamer.endpoints import Health, HealthServer

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
K8S_GPU = K8S / "gpu"
SYSTEMD = DEPLOY / "systemd"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILES = {"cpu": DEPLOY / "Dockerfile", "gpu": DEPLOY / "Dockerfile.gpu"}
STATEFULSETS = {"cpu": K8S, "gpu": K8S_GPU}
DAEMON_ARGV = ["streamer", "run", "--config", "/etc/streamer/config.yaml"]
# Stands in for metadata.name when a pod's environment is assembled.
POD_NAME = "streamer-0"
DEFAULTS = load_config(environ={})


# ------------------------------------------------------------------ helpers
def _documents(path: Path) -> list[dict[str, Any]]:
    """Every YAML document in a file (multi-document aware), each a mapping."""
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert documents, f"{path} holds no YAML document"
    for document in documents:
        assert isinstance(document, dict), f"{path}: a document is not a mapping"
    return documents


def _k8s(kind: str, directory: Path = K8S) -> dict[str, Any]:
    (found,) = [d for p in sorted(directory.glob("*.yaml")) for d in _documents(p) if d["kind"] == kind]
    return found


def _container(statefulset: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = statefulset["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def _pod_labels(statefulset: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = statefulset["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects(match_labels: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(match_labels) and all(labels.get(k) == v for k, v in match_labels.items())


def _cli(argv: list[str]) -> argparse.Namespace:
    """Parse a command line (``streamer ...``) with the real parser; exits on a bad one."""
    assert argv[0] == "streamer", argv
    return build_parser(argv[1:]).parse_args(argv[1:])


def _seconds(span: str | int | float) -> float:
    """A compose or systemd time span ("30s", "2min", "45") in seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min)?\s*", str(span))
    assert match, f"not a simple time span: {span!r}"
    scale = {"ms": 0.001, "m": 60.0, "min": 60.0}.get(match.group(2) or "s", 1.0)
    return float(match.group(1)) * scale


def _load_yaml_config(text: str, tmp_path: Path, environ: Mapping[str, str]) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, environ=environ)


def _configmap_config(tmp_path: Path) -> Config:
    text: str = _k8s("ConfigMap")["data"]["config.yaml"]
    return _load_yaml_config(text, tmp_path, {})


@contextmanager
def _probe_server() -> Iterator[tuple[Health, int]]:
    """The daemon's real /healthz server on a free loopback port."""
    health = Health()
    server = HealthServer(CollectorRegistry(), health, "127.0.0.1", 0)
    server.start()
    try:
        yield health, server.port
    finally:
        server.stop()


def _run_probe(argv: list[str], port: int) -> int:
    """Run a health check command line here; ``python`` is this interpreter."""
    assert argv[0] == "python", argv
    env = {"STREAMER__METRICS__PORT": str(port), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, *argv[1:]], capture_output=True, timeout=30, check=False,
                            env=env)
    return result.returncode


def _assert_probe_follows_healthz(argv: list[str]) -> None:
    with _probe_server() as (health, port):
        assert _run_probe(argv, port) == 0
        health.fatal = "commit loop failed"
        assert _run_probe(argv, port) != 0
    # Nothing listens any more: a refused connection must fail the check too.
    assert _run_probe(argv, port) != 0


# ------------------------------------------------------------------ Dockerfiles
def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, f"{path} ends inside a continued line"
    return instructions


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    """The build stages, each starting with its FROM."""
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in _instructions(path):
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def _base_image(path: Path, from_args: str) -> str:
    """A FROM's image with the global ARG defaults substituted."""
    args: dict[str, str] = {}
    for keyword, rest in _instructions(path):
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
    image = from_args.split()[0]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], image)


def _final(path: Path, keyword: str) -> list[str]:
    return [rest for k, rest in _stages(path)[-1] if k == keyword]


def _env(path: Path) -> dict[str, str]:
    """ENV of the final stage (``ENV A=1 B=2`` form)."""
    env: dict[str, str] = {}
    for rest in _final(path, "ENV"):
        for item in shlex.split(rest):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def _dockerignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps a path (or a folder above it) out of the context.

    Docker's rule: the last pattern that matches decides; ``!`` re-includes.
    """
    parts = PurePosixPath(relative).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        if any(fnmatch.fnmatchcase(c, body) or fnmatch.fnmatchcase(c, body.removeprefix("**/"))
               for c in candidates):
            ignored = not negate
    return ignored


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_builds_in_a_stage_and_ships_only_the_venv(variant: str) -> None:
    path = DOCKERFILES[variant]
    stages = _stages(path)
    assert len(stages) >= 2, "multi-stage: a builder and a runtime stage"
    froms = [stage[0][1] for stage in stages]
    # The venv links to its interpreter by path: both stages share the base.
    assert {_base_image(path, f) for f in froms} == {"python:3.11-slim"}
    runtime = stages[-1]
    copies_from = [rest for k, rest in runtime if k == "COPY" and rest.startswith("--from")]
    assert [c.split()[1:] for c in copies_from] == [["/opt/streamer", "/opt/streamer"]]
    runs = " ".join(rest for k, rest in runtime if k == "RUN")
    for tool in ("pip ", "apt-get", "gcc", "build-essential"):
        assert tool not in runs, f"the runtime stage installs with {tool.strip()}"
    text = path.read_text(encoding="utf-8")
    assert "[dev]" not in text and "[export]" not in text and "[embedded]" not in text
    pip_installs = [rest for stage in stages for k, rest in stage if k == "RUN" and "pip install" in rest]
    assert pip_installs
    for rest in pip_installs:
        for command in rest.split("&&"):
            if "pip install" in command:
                assert "--no-cache-dir" in command, command


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_runs_the_daemon_as_the_non_root_uid_the_pods_use(variant: str) -> None:
    path = DOCKERFILES[variant]
    (user,) = _final(path, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric, non-root USER (runAsNonRoot checks numbers)"
    assert gid.isdigit() and int(gid) != 0
    pod_security = _k8s("StatefulSet", STATEFULSETS[variant])["spec"]["template"]["spec"]["securityContext"]
    assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == (int(uid), int(gid))
    (entrypoint,) = _final(path, "ENTRYPOINT")
    (cmd,) = _final(path, "CMD")
    argv = json.loads(entrypoint) + json.loads(cmd)
    assert argv == DAEMON_ARGV
    assert _cli(argv).command == "run"
    assert _final(path, "EXPOSE") == [str(DEFAULTS.metrics.port)]
    assert "config.yaml /etc/streamer/config.yaml" in _final(path, "COPY")
    assert _final(path, "STOPSIGNAL") == ["SIGTERM"]


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_healthcheck_follows_healthz(variant: str) -> None:
    (healthcheck,) = _final(DOCKERFILES[variant], "HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    assert "--start-period=" in options and "--interval=" in options
    argv = json.loads(command)
    assert "/healthz" in " ".join(argv)
    assert not {"curl", "wget"} & set(argv), "python:3.11-slim has neither"
    _assert_probe_follows_healthz(argv)


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_copies_only_what_the_dockerignore_lets_through(variant: str) -> None:
    patterns = _dockerignore()
    sources = []
    for stage in _stages(DOCKERFILES[variant]):
        for keyword, rest in stage:
            if keyword in {"COPY", "ADD"} and not rest.startswith("--from"):
                sources += [s.rstrip("/") for s in rest.split()[:-1] if not s.startswith("--")]
    assert "streamer" in sources and "models" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _dockerignored(source, patterns), f"{source} is excluded from the build context"
    for unwanted in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "streamer/__pycache__/cli.pyc",
                     "benchmarks/model-full.json", "streamer.egg-info/PKG-INFO"):
        assert _dockerignored(unwanted, patterns), f"{unwanted} would be sent to the builder"


def test_gpu_image_selects_the_tensorflow_backend() -> None:
    path = DOCKERFILES["gpu"]
    env = _env(path)
    assert load_config(environ=env).predictor.lstm.backend == "tensorflow"
    assert "tensorflow[and-cuda]" in path.read_text(encoding="utf-8")
    assert load_config(environ=_env(DOCKERFILES["cpu"])).predictor.lstm.backend == "numpy"


# ------------------------------------------------------------------ compose
def _compose() -> dict[str, Any]:
    (document,) = _documents(COMPOSE)
    return document


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts of a service: container path -> host path."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        mounts[target] = (DEPLOY / source).resolve()
    return mounts


def _advertised(kafka: dict[str, Any]) -> set[str]:
    listeners: str = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    return {entry.split("://", 1)[1] for entry in listeners.split(",")}


def test_compose_runs_the_whole_stack() -> None:
    assert set(_services()) == {"kafka", "detector", "simulator", "prometheus", "grafana"}
    assert _services()["kafka"]["image"].startswith("apache/kafka:")
    assert _services()["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft


def test_compose_builds_and_mounts_files_that_exist() -> None:
    mounted = 0
    for name, service in _services().items():
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert context == ROOT, name
            assert (context / service["build"]["dockerfile"]).is_file(), name
        for target, source in _mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"
            mounted += 1
    assert mounted >= 6


def test_compose_detector_loads_the_repo_config_with_the_broker_override() -> None:
    services = _services()
    detector = services["detector"]
    argv = ["streamer", *detector["command"]]
    assert argv == DAEMON_ARGV and _cli(argv).command == "run"
    config_path = _mounts(detector)["/etc/streamer/config.yaml"]
    assert config_path == ROOT / "config.yaml"
    config = load_config(config_path, environ=detector["environment"])
    assert config.kafka.bootstrap_servers in _advertised(services["kafka"])
    assert str(config.metrics.port) in " ".join(detector["ports"])
    assert _seconds(detector["stop_grace_period"]) > config.runtime.shutdown_timeout_s
    assert detector["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_detector_healthcheck_follows_healthz() -> None:
    test = _services()["detector"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    _assert_probe_follows_healthz(test[1:])


def test_compose_simulator_feeds_the_broker_through_the_cli() -> None:
    services = _services()
    simulator = services["simulator"]
    args = _cli(["streamer", *simulator["command"]])
    assert args.command == "simulate"
    assert args.bootstrap_servers in _advertised(services["kafka"])
    assert args.duration > 0 and args.devices > 0
    assert simulator["healthcheck"] == {"disable": True}, "it serves no /healthz"
    config = load_config(_mounts(simulator)["/etc/streamer/config.yaml"], environ=simulator["environment"])
    detector = load_config(ROOT / "config.yaml", environ=services["detector"]["environment"])
    assert config.kafka.input_topic == detector.kafka.input_topic


def test_compose_waits_for_health_only_where_there_is_a_healthcheck() -> None:
    services = _services()
    waits = 0
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            if condition["condition"] == "service_healthy":
                check = services[dependency].get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), (name, dependency)
                waits += 1
    assert waits >= 4


def test_compose_prometheus_scrapes_the_detector_as_job_streamer() -> None:
    services = _services()
    prometheus = services["prometheus"]
    (config_flag,) = [a for a in prometheus["command"] if a.startswith("--config.file=")]
    container_config = PurePosixPath(config_flag.partition("=")[2])
    mounts = _mounts(prometheus)
    config = yaml.safe_load(mounts[str(container_config)].read_text(encoding="utf-8"))
    for rule_file in config["rule_files"]:
        assert str(container_config.parent / rule_file) in mounts, rule_file
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "streamer"
    (target,) = job["static_configs"][0]["targets"]
    host, _, port = target.partition(":")
    assert host in services and "command" in services[host]
    assert _cli(["streamer", *services[host]["command"]]).command == "run"
    assert int(port) == DEFAULTS.metrics.port


def test_compose_grafana_provisions_the_datasource_and_dashboard() -> None:
    services = _services()
    mounts = _mounts(services["grafana"])
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == DEPLOY / "grafana" / "provisioning"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "streamer.yml").read_text())["providers"]
    dashboards = mounts[provider["options"]["path"]]
    assert (dashboards / "streamer.json").is_file()
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/streamer.json"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    host_port = datasource["url"].removeprefix("http://")
    assert host_port.split(":")[0] in services
    assert any(p.endswith(":" + host_port.split(":")[1]) for p in services["prometheus"]["ports"])


# ------------------------------------------------------------------ systemd
def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    text = (SYSTEMD / name).read_text(encoding="utf-8")
    parser.read_string(text)
    return parser


def test_systemd_unit_restarts_on_failure_and_outlasts_the_drain() -> None:
    service = _unit("streamer.service")["Service"]
    assert service["Type"] == "exec", "the daemon does not speak sd_notify"
    assert "WatchdogSec" not in service
    assert service["Restart"] == "on-failure"
    assert _seconds(service["RestartSec"]) > 0
    assert service["KillSignal"] == "SIGTERM"
    assert _seconds(service["TimeoutStopSec"]) > DEFAULTS.runtime.shutdown_timeout_s
    assert service["EnvironmentFile"] == "-/etc/streamer/streamer.env"
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/opt/streamer/bin/streamer"
    assert ["streamer", *argv[1:]] == DAEMON_ARGV and _cli(["streamer", *argv[1:]]).command == "run"


def test_systemd_unit_runs_unprivileged_in_a_sandbox() -> None:
    service = _unit("streamer.service")["Service"]
    assert service.get("DynamicUser") == "yes" or service.get("User") not in {None, "root", "0"}
    expected = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                "PrivateTmp": "yes", "PrivateDevices": "yes", "RestrictSUIDSGID": "yes",
                "CapabilityBoundingSet": ""}
    assert {k: service.get(k) for k in expected} == expected
    assert re.fullmatch(r"\d+[KMG]", service["MemoryMax"])
    assert _unit("streamer.service")["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_env_example_names_real_config_keys() -> None:
    text = (SYSTEMD / "streamer.env.example").read_text(encoding="utf-8")
    # Commented-out examples count: uncommenting one must give a valid key.
    assignments = dict(re.findall(r"(?m)^#?(STREAMER__\w+)=(.*)$", text))
    assert "STREAMER__KAFKA__SECURITY__SASL_PASSWORD" in assignments
    assert "STREAMER__KAFKA__GROUP_INSTANCE_ID" in assignments
    config = load_config(ROOT / "config.yaml", environ=assignments)
    assert config.kafka.security.password() == assignments["STREAMER__KAFKA__SECURITY__SASL_PASSWORD"]
    assert config.kafka.bootstrap_servers == assignments["STREAMER__KAFKA__BOOTSTRAP_SERVERS"]


def test_systemd_healthcheck_probes_healthz_and_restarts_the_daemon() -> None:
    timer = _unit("streamer-healthcheck.timer")
    assert timer["Timer"]["Unit"] == "streamer-healthcheck.service"
    assert _seconds(timer["Timer"]["OnUnitInactiveSec"]) > 0
    service = _unit("streamer-healthcheck.service")["Service"]
    assert service["Type"] == "oneshot"
    assert shlex.split(service["ExecCondition"])[1:] == ["is-active", "--quiet", "streamer.service"]
    (script,) = shlex.split(service["ExecStart"])[2:]
    assert script.rstrip().endswith("restart streamer.service")
    assert "$" not in script and "%" not in script, "systemd would expand them"
    # The probe inside the retry loop, run against the real server.
    match = re.search(r'/opt/streamer/bin/python -c "([^"]+)" (\S+)', script)
    assert match, script
    assert match.group(2) == f"http://127.0.0.1:{DEFAULTS.metrics.port}/healthz"
    code = match.group(1)
    with _probe_server() as (health, port):
        probe = [sys.executable, "-c", code, f"http://127.0.0.1:{port}/healthz"]
        assert subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0
        health.fatal = "scoring loop failed"
        assert subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode != 0


# ------------------------------------------------------------------ Kubernetes
def test_kubernetes_manifests_parse_and_are_namespace_agnostic() -> None:
    kinds: dict[Path, list[str]] = {}
    for directory in (K8S, K8S_GPU):
        for path in sorted(directory.glob("*.yaml")):
            for document in _documents(path):
                assert {"apiVersion", "kind", "metadata"} <= set(document), path
                assert document["metadata"].get("name"), path
                assert "namespace" not in document["metadata"], path
                kinds.setdefault(directory, []).append(document["kind"])
    assert sorted(kinds[K8S]) == sorted(["ConfigMap", "Secret", "StatefulSet", "Service", "PodMonitor",
                                         "PodDisruptionBudget", "CronJob", "PersistentVolumeClaim"])
    assert kinds[K8S_GPU] == ["StatefulSet"]


# The oldest Kubernetes minor the manifests promise to work on (PDB policy/v1,
# StatefulSet minReadySeconds and persistentVolumeClaimRetentionPolicy are GA there).
OLDEST_KUBERNETES = "1.29.0"


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "1.33.0"])
def test_kubernetes_manifests_match_the_api_schemas(version: str) -> None:
    import kubernetes_validate

    checked = []
    for directory in (K8S, K8S_GPU):
        for path in sorted(directory.glob("*.yaml")):
            for document in _documents(path):
                if document["apiVersion"].startswith("monitoring.coreos.com/"):
                    continue  # a CRD: no schema ships with Kubernetes (checked structurally below)
                # strict: unknown fields (a typo'd key Kubernetes would silently drop) fail too
                kubernetes_validate.validate(document, version, strict=True)
                checked.append(document["kind"])
    assert sorted(checked) == sorted(["ConfigMap", "Secret", "StatefulSet", "Service", "PodDisruptionBudget",
                                      "StatefulSet", "CronJob", "PersistentVolumeClaim"])


def test_configmap_config_loads_and_matches_the_container(tmp_path: Path) -> None:
    config = _configmap_config(tmp_path)
    assert config.metrics.enabled and config.metrics.host == "0.0.0.0"  # noqa: S104  # scraped from other pods
    configmap = _k8s("ConfigMap")
    for directory in STATEFULSETS.values():
        statefulset = _k8s("StatefulSet", directory)
        container = _container(statefulset)
        config_path = PurePosixPath(_cli(["streamer", *container["args"]]).config)
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
        volumes = statefulset["spec"]["template"]["spec"]["volumes"]
        (volume,) = [v for v in volumes if v["name"] == mount["name"]]
        assert volume["configMap"]["name"] == configmap["metadata"]["name"]
        assert volume["configMap"]["items"] == [{"key": "config.yaml", "path": config_path.name}]
        (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
        assert port["containerPort"] == config.metrics.port


def _pod_environment(statefulset: dict[str, Any]) -> dict[str, str]:
    """What the kubelet would give the container: the Secret, then env (which wins)."""
    container = _container(statefulset)
    secret = _k8s("Secret")
    environ: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["secretRef"]["name"] == secret["metadata"]["name"]
        environ.update(secret["stringData"])
    for variable in container["env"]:
        if "value" in variable:
            environ[variable["name"]] = variable["value"]
        else:
            assert variable["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", variable
            environ[variable["name"]] = POD_NAME
    return environ


@pytest.mark.parametrize("variant", sorted(STATEFULSETS))
def test_pod_config_loads_with_the_secret_and_the_pod_name(variant: str, tmp_path: Path) -> None:
    statefulset = _k8s("StatefulSet", STATEFULSETS[variant])
    (instance_id,) = [v for v in _container(statefulset)["env"]
                      if v["name"] == "STREAMER__KAFKA__GROUP_INSTANCE_ID"]
    assert instance_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    text: str = _k8s("ConfigMap")["data"]["config.yaml"]
    config = _load_yaml_config(text, tmp_path, _pod_environment(statefulset))
    assert config.kafka.group_instance_id == POD_NAME
    secret = _k8s("Secret")["stringData"]
    assert config.kafka.security.protocol == secret["STREAMER__KAFKA__SECURITY__PROTOCOL"]
    assert config.kafka.security.password() == secret["STREAMER__KAFKA__SECURITY__SASL_PASSWORD"]
    assert config.predictor.lstm.backend == {"cpu": "numpy", "gpu": "tensorflow"}[variant]


@pytest.mark.parametrize("variant", sorted(STATEFULSETS))
def test_pod_probes_use_healthz_and_readyz_on_the_metrics_port(variant: str) -> None:
    container = _container(_k8s("StatefulSet", STATEFULSETS[variant]))
    assert [p["name"] for p in container["ports"]] == ["metrics"]
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe


@pytest.mark.parametrize("variant", sorted(STATEFULSETS))
def test_pod_grace_period_outlasts_the_drain(variant: str, tmp_path: Path) -> None:
    drain = _configmap_config(tmp_path).runtime.shutdown_timeout_s
    spec = _k8s("StatefulSet", STATEFULSETS[variant])["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > drain


@pytest.mark.parametrize("variant", sorted(STATEFULSETS))
def test_pod_runs_non_root_read_only_within_resources(variant: str) -> None:
    statefulset = _k8s("StatefulSet", STATEFULSETS[variant])
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    container = _container(statefulset)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # A read-only root needs somewhere writable for libraries' scratch files.
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in volume
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][bound]), bound


def test_statefulset_states_the_scaling_rule_and_keeps_to_it(tmp_path: Path) -> None:
    partitions = _configmap_config(tmp_path).kafka.topic_partitions
    for directory in STATEFULSETS.values():
        header = (directory / "statefulset.yaml").read_text(encoding="utf-8").split("apiVersion:")[0]
        assert "replicas <= partitions" in header, directory
        replicas = _k8s("StatefulSet", directory)["spec"]["replicas"]
        assert replicas >= 1
        assert replicas <= partitions


def test_headless_service_governs_the_statefulset() -> None:
    service = _k8s("Service")
    statefulset = _k8s("StatefulSet")
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert _selects(service["spec"]["selector"], _pod_labels(statefulset))
    assert _selects(statefulset["spec"]["selector"]["matchLabels"], _pod_labels(statefulset))
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics"
    assert port["port"] == _container(statefulset)["ports"][0]["containerPort"]


def test_pdb_allows_one_pod_down_and_selects_both_variants() -> None:
    pdb = _k8s("PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}
    for directory in STATEFULSETS.values():
        assert _selects(pdb["spec"]["selector"]["matchLabels"], _pod_labels(_k8s("StatefulSet", directory)))


def _scrape_job(podmonitor: dict[str, Any], pod_labels: Mapping[str, str], namespace: str) -> str:
    """The job label the Prometheus Operator gives a PodMonitor's series.

    By default ``<namespace>/<podmonitor name>``; ``jobLabel`` takes it from that
    pod label instead; a relabeling that writes ``job`` has the last word.
    """
    job = f"{namespace}/{podmonitor['metadata']['name']}"
    job_label = podmonitor["spec"].get("jobLabel")
    if job_label and job_label in pod_labels:
        job = pod_labels[job_label]
    (endpoint,) = podmonitor["spec"]["podMetricsEndpoints"]
    for relabeling in endpoint.get("relabelings", []):
        if relabeling.get("targetLabel") == "job":
            assert relabeling.get("action", "replace") == "replace" and "sourceLabels" not in relabeling
            job = relabeling["replacement"]
    return job


def test_podmonitor_scrapes_the_pods_as_the_job_the_rules_select() -> None:
    podmonitor = _k8s("PodMonitor")
    assert podmonitor["apiVersion"] == "monitoring.coreos.com/v1"
    (endpoint,) = podmonitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    rules = (DEPLOY / "prometheus" / "rules.yml").read_text(encoding="utf-8")
    rule_jobs = set(re.findall(r'job="([^"]+)"', rules))
    assert rule_jobs == {"streamer"}
    for directory in STATEFULSETS.values():
        statefulset = _k8s("StatefulSet", directory)
        labels = _pod_labels(statefulset)
        assert _selects(podmonitor["spec"]["selector"]["matchLabels"], labels)
        assert endpoint["port"] in [p["name"] for p in _container(statefulset)["ports"]]
        assert _scrape_job(podmonitor, labels, namespace="monitoring-test") in rule_jobs


def test_gpu_statefulset_replaces_the_base_with_a_gpu_pod() -> None:
    base = _k8s("StatefulSet")
    gpu = _k8s("StatefulSet", K8S_GPU)
    # Same identity, so the base's Service, PDB and PodMonitor apply unchanged.
    assert gpu["metadata"]["name"] == base["metadata"]["name"]
    assert gpu["spec"]["selector"] == base["spec"]["selector"]
    assert gpu["spec"]["serviceName"] == base["spec"]["serviceName"]
    container = _container(gpu)
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert "nvidia.com/gpu" not in _container(base)["resources"]["limits"]
    pod = gpu["spec"]["template"]["spec"]
    assert pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert container["image"] != _container(base)["image"]


# ------------------------------------------------------------------ retraining (CronJob, systemd timer)
def _retrain_pod() -> dict[str, Any]:
    pod: dict[str, Any] = _k8s("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return pod


def test_retrain_cronjob_runs_streamer_retrain_on_the_registry_claim(tmp_path: Path) -> None:
    cronjob = _k8s("CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = _retrain_pod()
    (container,) = pod["containers"]
    args = _cli(["streamer", *container["args"]])
    assert args.command == "retrain" and not args.promote_after_shadow
    environ = {v["name"]: v["value"] for v in container["env"]}
    secret = _k8s("Secret")
    assert [s["secretRef"]["name"] for s in container["envFrom"]] == [secret["metadata"]["name"]]
    text: str = _k8s("ConfigMap")["data"]["config.yaml"]
    config = _load_yaml_config(text, tmp_path, {**secret["stringData"], **environ})
    registry = PurePosixPath(config.predictor.lstm.registry or "")
    (mount,) = [m for m in container["volumeMounts"] if registry.is_relative_to(m["mountPath"])]
    assert not mount.get("readOnly")
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = _k8s("PersistentVolumeClaim")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "the detector pods on other nodes read it"
    config_directory = str(PurePosixPath(args.config).parent)
    (config_mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == config_directory]
    (config_volume,) = [v for v in pod["volumes"] if v["name"] == config_mount["name"]]
    assert config_volume["configMap"]["name"] == _k8s("ConfigMap")["metadata"]["name"]


def test_retrain_job_retries_only_an_unreachable_broker() -> None:
    from streamer.lifecycle.retrain import BAD_INPUT, NOT_BETTER

    job = _k8s("CronJob")["spec"]["jobTemplate"]["spec"]
    (rule,) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert sorted(rule["onExitCodes"]["values"]) == sorted([BAD_INPUT, NOT_BETTER])
    assert rule["onExitCodes"]["containerName"] == _retrain_pod()["containers"][0]["name"]
    assert job["backoffLimit"] >= 1
    assert _retrain_pod()["restartPolicy"] == "Never"  # podFailurePolicy requires it


def test_retrain_pod_runs_non_root_read_only_like_the_detector() -> None:
    pod = _retrain_pod()
    detector = _k8s("StatefulSet")["spec"]["template"]["spec"]
    assert pod["securityContext"] == detector["securityContext"]
    (container,) = pod["containers"]
    assert container["securityContext"] == _container(_k8s("StatefulSet"))["securityContext"]
    assert container["image"] == _container(_k8s("StatefulSet"))["image"]
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in volume
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][bound]), bound


def test_systemd_retrain_timer_runs_the_retrain_service() -> None:
    from streamer.lifecycle.retrain import NOT_BETTER

    timer = _unit("streamer-retrain.timer")
    assert timer["Timer"]["Unit"] == "streamer-retrain.service"
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"
    service = _unit("streamer-retrain.service")["Service"]
    assert service["Type"] == "oneshot"
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/opt/streamer/bin/streamer"
    assert _cli(["streamer", *argv[1:]]).command == "retrain"
    # A refusal by the gate is an expected outcome, not a failed unit.
    assert service["SuccessExitStatus"].split() == [str(NOT_BETTER)]


def test_systemd_retrain_writes_the_registry_the_daemon_user_can_read() -> None:
    unit = _unit("streamer-retrain.service")
    service = unit["Service"]
    # Environment= repeats (configparser keeps the last): read every one from the file.
    text = (SYSTEMD / "streamer-retrain.service").read_text(encoding="utf-8")
    environ = dict(re.findall(r"(?m)^Environment=([^=\s]+)=(.*)$", text))
    config = load_config(ROOT / "config.yaml", environ=environ)
    registry = PurePosixPath(config.predictor.lstm.registry or "")
    assert registry.is_relative_to(f"/var/lib/{service['StateDirectory']}")
    # The daemon's dynamic user is named after its unit: the same name shares the same uid.
    assert service["DynamicUser"] == "yes" and service["User"] == "streamer"
    daemon = _unit("streamer.service")["Service"]
    sandbox = ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
               "CapabilityBoundingSet", "RestrictAddressFamilies", "SystemCallErrorNumber")
    assert {k: service.get(k) for k in sandbox} == {k: daemon.get(k) for k in sandbox}


def test_systemd_units_pass_systemd_analyze_verify() -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is required (Debian package 'systemd')")
    units = sorted(str(path) for pattern in ("*.service", "*.timer") for path in SYSTEMD.glob(pattern))
    result = subprocess.run([tool, "verify", *units], capture_output=True, text=True, timeout=60, check=False)
    # The virtual environment is not installed on the test machine: that one complaint is expected.
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and "/opt/streamer/bin/streamer is not executable" not in line]
    assert not problems, "\n".join(problems)
