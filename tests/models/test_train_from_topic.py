"""`streamer train --topic`: replay an input topic on the real broker and train on it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from models.data import TrainingData
from streamer.cli import main
from streamer.codec import encode_reading
from streamer.config import Config
from streamer.errors import BrokerError
from streamer.kafka.clients import connection_kwargs, ensure_topics
from streamer.training_data import topic_readings

pytestmark = pytest.mark.integration

DEVICES = 3
STEPS = 120
BASE_TS = 1_700_000_000_000


def _value(device: int, step: int) -> float:
    return 10.0 * device + float(np.sin(step / 5.0))


async def _produce(config: Config) -> None:
    kafka = config.kafka
    await ensure_topics(kafka, [kafka.input_topic])
    producer = AIOKafkaProducer(**connection_kwargs(kafka))
    await producer.start()
    try:
        sends = [
            await producer.send(kafka.input_topic, key=f"dev-{d}".encode(),
                                value=encode_reading(f"dev-{d}", BASE_TS + 100 * step, _value(d, step)))
            # Newest first: the replay must restore time order itself.
            for step in reversed(range(STEPS)) for d in range(DEVICES)
        ]
        sends.append(await producer.send(kafka.input_topic, key=b"dev-0", value=b"{not json"))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


@pytest.fixture
def produced(config_factory: Callable[..., Config]) -> Config:
    config = config_factory()
    asyncio.run(_produce(config))
    return config


def test_replay_groups_readings_by_device_in_time_order_and_skips_rejects(
    produced: Config, caplog: pytest.LogCaptureFixture
) -> None:
    data: TrainingData = asyncio.run(topic_readings(produced, produced.kafka.input_topic, idle_timeout_s=5.0))
    assert "malformed_json 1" in caplog.text
    assert sorted(data.series) == [f"dev-{d}" for d in range(DEVICES)]
    for d in range(DEVICES):
        np.testing.assert_allclose(data.series[f"dev-{d}"][:, 0], [_value(d, s) for s in range(STEPS)])
    assert data.channels == ("value",)


def test_replay_of_a_missing_topic_fails(produced: Config) -> None:
    with pytest.raises(BrokerError, match="does not exist"):
        asyncio.run(topic_readings(produced, "no-such-topic-here", idle_timeout_s=2.0))


def test_train_from_topic_end_to_end(
    produced: Config, write_config: Callable[[Config, Path], Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config_path = write_config(produced, tmp_path / "config.json")
    out = tmp_path / "bundle"
    assert main(["train", "--topic", produced.kafka.input_topic, "--config", str(config_path),
                 "--out", str(out), "--window", "16", "--min-context", "4", "--units", "4", "--epochs", "1",
                 "--val-fraction", "0.2", "--quiet"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["training"]["devices"] == DEVICES
    assert described["training"]["steps"] == DEVICES * STEPS
    assert described["training"]["data"] == f"topic {produced.kafka.input_topic}"
