"""The chaos producer's records: deterministic, and every hostile one rejected as planned."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from streamer.config import load_config
from streamer.lab.chaos.plan import ChaosPlan
from streamer.lab.chaos.reference import reference_run
from streamer.lab.chaos.traffic import HOSTILE_KINDS, Traffic


def _records(traffic: Traffic) -> tuple[list[Any], dict[int, str]]:
    records: list[Any] = []
    hostile: dict[int, str] = {}
    for step in range(traffic.steps):
        for item in traffic.step(step):
            if item.hostile is not None:
                hostile[len(records)] = item.hostile
            records.append(SimpleNamespace(topic="in", partition=0, offset=len(records), key=item.key,
                                           value=item.value, timestamp=0))
    return records, hostile


def test_chaos_traffic_is_deterministic_and_every_hostile_record_is_rejected_as_planned() -> None:
    config = load_config(None)
    plan = ChaosPlan(devices=8, duration_s=30.0, anomalies=6, hostile_every=2)
    records, hostile = _records(Traffic(plan, config.readings.channels))
    again, _ = _records(Traffic(plan, config.readings.channels))
    assert [(r.key, r.value) for r in records] == [(r.key, r.value) for r in again]
    assert set(hostile.values()) == set(HOSTILE_KINDS)
    rejected = reference_run(config, {0: records}).rejected
    assert rejected == {(0, offset): reason for offset, reason in hostile.items()}
