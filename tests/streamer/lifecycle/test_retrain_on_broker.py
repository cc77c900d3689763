"""`streamer retrain` on the real broker: readings, alert episodes and feedback in; the registry out."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from models.bundle import ModelBundle
from models.registry import BundleRegistry
from streamer.cli import main
from streamer.codec import Alert, encode_alert, encode_reading
from streamer.config import Config
from streamer.feedback.messages import Feedback, encode_feedback, feedback_key
from streamer.kafka.clients import connection_kwargs, ensure_topics

pytestmark = pytest.mark.integration

DEVICES = 3
STEPS = 400
STEP_MS = 1_000
# Tiny on purpose: the suite stays fast.
WINDOW, UNITS = 16, 4


def _value(device: int, step: int, rng: np.random.Generator) -> float:
    return 20.0 * device + 5.0 * float(np.sin(2 * np.pi * step / 50.0 + device)) + 0.1 * float(rng.normal())


def _alert(alert_id: str, event: str, device: str, ts: int, start: int, version: str) -> Alert:
    return Alert(alert_id=alert_id, event=event, device_id=device, ts=ts,  # type: ignore[arg-type]
                 episode_start_ts=start, channel="value", actual=1.0, forecast=0.0, residual=1.0,
                 smoothed_residual=1.0, threshold=0.5, score=0.99, method="zscore", model_version=version,
                 processing_ms=1.0, latency_ms=1.0)


async def _produce(config: Config, readings: list[tuple[str, int, float]], alerts: list[Alert],
                   shadow: list[Alert], feedback: list[Feedback]) -> None:
    kafka = config.kafka
    await ensure_topics(kafka, [kafka.input_topic, kafka.alert_topic, kafka.shadow_alert_topic,
                                kafka.feedback_topic])
    producer = AIOKafkaProducer(**connection_kwargs(kafka))
    await producer.start()
    try:
        sends = [await producer.send(kafka.input_topic, key=d.encode(), value=encode_reading(d, ts, v))
                 for d, ts, v in readings]
        sends += [await producer.send(kafka.alert_topic, key=a.device_id.encode(), value=encode_alert(a))
                  for a in alerts]
        sends += [await producer.send(kafka.shadow_alert_topic, key=a.device_id.encode(),
                                      value=encode_alert(a)) for a in shadow]
        sends += [await producer.send(kafka.feedback_topic, key=feedback_key(m), value=encode_feedback(m))
                  for m in feedback]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def _zero_bundle(path: Path) -> ModelBundle:
    """A bundle of the tiny shape whose forecast is always the running mean: any training beats it."""
    from models.tf_runtime import load_keras

    load_keras()
    from models.architecture import ArchitectureSpec, build_forecaster
    from models.bundle import BundleMetadata, save_bundle
    from models.normalization import NormalizationSpec

    architecture = ArchitectureSpec(units=UNITS)
    model = build_forecaster(architecture)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    return save_bundle(path, model, BundleMetadata(architecture, NormalizationSpec(), WINDOW, 4, ("value",)))


def _settings(tmp_path: Path, **retrain: object) -> dict[str, dict[str, object]]:
    lstm = msgspec.structs.replace(Config().predictor.lstm, registry=str(tmp_path / "registry"))
    return {
        "predictor": {"lstm": lstm},
        # The session's config factory names the other topics afresh; this one too.
        "kafka": {"shadow_alert_topic": f"alerts-shadow-{uuid.uuid4().hex[:10]}"},
        "retrain": {"units": UNITS, "window": WINDOW, "epochs": 3, "batch_size": 64, "learning_rate": 0.01,
                    "max_sequences": 1_500, "min_readings": 300, "episode_margin_s": 5.0, **retrain},
    }


def _retrain(config: Config, write_config: Callable[[Config, Path], Path], tmp_path: Path,
             capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, dict[str, object]]:
    path = write_config(config, tmp_path / "config.json")
    code = main(["retrain", "--config", str(path), "--log-level", "WARNING", *flags])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def fleet_topics(config_factory: Callable[..., Config], tmp_path: Path) -> tuple[Config, dict[str, int]]:
    """Readings of a small fleet, one resolved alert episode (confirmed) and one missed anomaly."""
    config = config_factory(**_settings(tmp_path))
    rng = np.random.default_rng(0)
    start = int(time.time() * 1000) - STEPS * STEP_MS
    readings = [(f"dev-{d}", start + s * STEP_MS, _value(d, s, rng))
                for s in range(STEPS) for d in range(DEVICES)]
    episode = str(uuid.uuid4())
    open_ts, resolve_ts = start + 100 * STEP_MS, start + 130 * STEP_MS
    alerts = [_alert(episode, "open", "dev-0", open_ts, open_ts, "lstm-any"),
              _alert(episode, "resolve", "dev-0", resolve_ts, open_ts, "lstm-any")]
    missed = (start + 200 * STEP_MS, start + 210 * STEP_MS)
    feedback = [Feedback(kind="confirmed", device_id="dev-0", alert_id=episode),
                Feedback(kind="missed", device_id="dev-1", start_ts=missed[0], end_ts=missed[1])]
    asyncio.run(_produce(config, readings, alerts, [], feedback))
    margin = 5 * STEP_MS

    def inside(device: str, low: int, high: int) -> int:
        return sum(d == device and low - margin <= ts <= high + margin for d, ts, _ in readings)

    expected = {"alert": inside("dev-0", open_ts, resolve_ts), "missed": inside("dev-1", *missed)}
    return config, expected


def test_retrain_leaves_out_episodes_and_registers_a_better_bundle_as_candidate(
    fleet_topics: tuple[Config, dict[str, int]], write_config: Callable[[Config, Path], Path],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config, expected = fleet_topics
    registry = BundleRegistry(tmp_path / "registry")
    current = registry.add(_zero_bundle(tmp_path / "zero").path)
    registry.promote(current)
    code, summary = _retrain(config, write_config, tmp_path, capsys)
    assert code == 0, summary
    assert summary["decision"] == "registered"
    readings = summary["readings"]
    assert isinstance(readings, dict)
    assert readings["read"] == DEVICES * STEPS
    assert readings["excluded_alert_episodes"] == expected["alert"]
    assert readings["excluded_missed"] == expected["missed"]
    assert readings["train"] + readings["holdout"] + readings["in_short_segments"] == \
        DEVICES * STEPS - expected["alert"] - expected["missed"]
    errors = summary["holdout_mse"]
    assert isinstance(errors, dict) and errors["new"] < errors["current"]
    assert registry.pointer("candidate") == summary["candidate"] != current
    assert registry.pointer("current") == current
    added = registry.load("candidate")
    assert added is not None and added.metadata.validation["holdout_mse"] == errors["new"]
    assert added.metadata.training["retrained_from"] == current


def test_an_impossible_margin_leaves_the_registry_unchanged(
    fleet_topics: tuple[Config, dict[str, int]], write_config: Callable[[Config, Path], Path],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config, _ = fleet_topics
    config = msgspec.structs.replace(
        config, retrain=msgspec.structs.replace(config.retrain, min_improvement=0.99))
    registry = BundleRegistry(tmp_path / "registry")
    current = registry.add(_zero_bundle(tmp_path / "zero").path)
    registry.promote(current)
    before = (sorted(v.version for v in registry.versions()), registry.history())
    code, summary = _retrain(config, write_config, tmp_path, capsys, "--out", str(tmp_path / "kept"))
    assert code == 3, summary
    assert summary["decision"] == "not_better" and "needed 99.0%" in str(summary["reason"])
    assert (sorted(v.version for v in registry.versions()), registry.history()) == before
    assert registry.pointer("candidate") is None
    assert (tmp_path / "kept" / "bundle.json").is_file()  # --out keeps it for a look


def test_too_few_readings_is_an_input_error(
    fleet_topics: tuple[Config, dict[str, int]], write_config: Callable[[Config, Path], Path],
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config, _ = fleet_topics
    config = msgspec.structs.replace(
        config, retrain=msgspec.structs.replace(config.retrain, min_readings=10_000))
    code, summary = _retrain(config, write_config, tmp_path, capsys)
    assert code == 2 and summary["decision"] == "too_little_data"
    assert BundleRegistry(tmp_path / "registry").versions() == []


@pytest.mark.parametrize(("extra_shadow_alerts", "promoted"), [(0, True), (3, False)])
def test_promote_after_shadow_compares_shadow_alerts_with_current(
    config_factory: Callable[..., Config], write_config: Callable[[Config, Path], Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], extra_shadow_alerts: int, promoted: bool,
) -> None:
    config = config_factory(**_settings(tmp_path, shadow_period_s=0.001, max_alert_increase=0.5))
    registry = BundleRegistry(tmp_path / "registry")
    from models.bundle import load_bundle

    current = registry.add(load_bundle("default").path)
    registry.promote(current)
    candidate = registry.add(_zero_bundle(tmp_path / "zero").path)
    registry.shadow(candidate)
    time.sleep(1.1)  # the history has second resolution; the episodes open after the shadow began
    now = int(time.time() * 1000)
    confirmed = str(uuid.uuid4())
    live = [_alert(confirmed, "open", "dev-0", now - 500, now - 500, current),
            _alert(str(uuid.uuid4()), "open", "dev-1", now - 400, now - 400, current)]
    shadow = [_alert(str(uuid.uuid4()), "open", "dev-0", now - 450, now - 450, candidate),
              _alert(str(uuid.uuid4()), "open", "dev-1", now - 400, now - 400, "some-other-version")]
    shadow += [_alert(str(uuid.uuid4()), "open", f"dev-{9 + i}", now - 300, now - 300, candidate)
               for i in range(extra_shadow_alerts)]
    asyncio.run(_produce(config, [], live, shadow, [Feedback(kind="confirmed", device_id="dev-0",
                                                             alert_id=confirmed)]))
    code, summary = _retrain(config, write_config, tmp_path, capsys, "--promote-after-shadow")
    evidence = summary["promotion"]["evidence"]  # type: ignore[index]
    assert (evidence["current_episodes"], evidence["candidate_episodes"]) == (2, 1 + extra_shadow_alerts)
    assert (evidence["confirmed"], evidence["confirmed_caught"]) == (1, 1)
    if promoted:
        assert code == 0 and registry.pointer("current") == candidate
    else:
        assert code == 3 and registry.pointer("current") == current
        assert registry.pointer("candidate") == candidate


def test_recent_records_keeps_the_last_records_of_each_partition_in_offset_order(
    config_factory: Callable[..., Config],
) -> None:
    from streamer.lifecycle.topics import recent_records

    config = config_factory()
    readings = [(f"dev-{d}", 1_000 + s, float(s)) for s in range(40) for d in range(4)]
    asyncio.run(_produce(config, readings, [], [], []))
    records = asyncio.run(recent_records(config.kafka, config.kafka.input_topic, per_partition=10))
    by_partition: dict[int, list[int]] = {}
    for record in records:
        by_partition.setdefault(record.partition, []).append(record.offset)
    for offsets in by_partition.values():
        assert len(offsets) == 10 and offsets == sorted(offsets)
    # The newest of every device of a partition is among them.
    newest = {json.loads(record.value or b"{}")["ts"] for record in records}
    assert 1_039 in newest


def test_with_auto_promote_nothing_is_trained_while_a_candidate_is_in_its_shadow_period(
    config_factory: Callable[..., Config], write_config: Callable[[Config, Path], Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = config_factory(**_settings(tmp_path, auto_promote=True, shadow_period_s=3_600.0))
    registry = BundleRegistry(tmp_path / "registry")
    from models.bundle import load_bundle

    registry.promote(registry.add(load_bundle("default").path))
    candidate = registry.add(_zero_bundle(tmp_path / "zero").path)
    registry.shadow(candidate)
    versions = registry.versions()
    code, summary = _retrain(config, write_config, tmp_path, capsys)
    assert code == 3 and summary["decision"] == "candidate_in_shadow"
    assert registry.versions() == versions and registry.pointer("candidate") == candidate
