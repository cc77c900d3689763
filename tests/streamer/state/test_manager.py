"""Snapshot rounds and restores of the state manager, at its producer and thread seams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import numpy as np
import pytest

from streamer.codec import encode_reading
from streamer.config import Config, load_config
from streamer.metrics import Metrics
from streamer.scoring.pipeline import ScoringPipeline
from streamer.state.manager import StateManager, release_partitions
from streamer.state.snapshots import decode_snapshot
from tests.fakes import FakeProducer, FakeRecord

T = TypeVar("T")
START_MS = 1_700_000_000_000


async def inline(fn: Callable[[], T], job: str) -> T:
    return fn()


def make_config() -> Config:
    base = load_config(None, environ={})
    return msgspec.structs.replace(base, thresholds=msgspec.structs.replace(base.thresholds, warmup=5))


def records(partition: int, devices: list[str], steps: range, first_offset: int = 0) -> list[Any]:
    out: list[Any] = []
    for step in steps:
        for device_id in devices:
            out.append(FakeRecord(encode_reading(device_id, START_MS + 100 * step, 10.0 + step % 3),
                                  device_id.encode(), partition=partition, offset=first_offset + len(out)))
    return out


def manager(producer: FakeProducer | None = None, metrics: Metrics | None = None) -> StateManager:
    config = make_config()
    return StateManager(ScoringPipeline(config), config, producer=producer or FakeProducer(), run=inline,
                        metrics=metrics or Metrics())


async def test_a_round_snapshots_changed_devices_to_their_partition_then_marks_them() -> None:
    producer = FakeProducer()
    metrics = Metrics()
    state = manager(producer, metrics)
    state.replay(0, records(0, ["a", "b"], range(10)), {})
    state.replay(2, records(2, ["c"], range(10)), {})
    taken = state.take({0: 20, 2: 10})
    assert sorted(taken.device_ids) == ["a", "b", "c"]
    await state.write(taken)
    sent = {key.decode(): (topic, partition, decode_snapshot(value))
            for topic, key, value, partition in producer.sent if key is not None and value is not None}
    assert len(sent) == len(producer.sent) == 3
    assert {d: (t, p) for d, (t, p, _) in sent.items()} == {
        "a": (state.topic, 0), "b": (state.topic, 0), "c": (state.topic, 2)}
    assert {d: s.offset for d, (_, _, s) in sent.items() if s is not None} == {"a": 20, "b": 20, "c": 10}
    assert metrics.registry.get_sample_value("streamer_state_snapshots_total") == 3
    # Unchanged devices are not taken again; a new reading makes a device changed.
    assert state.take({0: 20, 2: 10}).device_ids == []
    state.replay(0, records(0, ["b"], range(10, 11), first_offset=20), {})
    assert state.take({0: 21, 2: 10}).device_ids == ["b"]
    # Only the partitions asked for.
    assert state.take({2: 10}).device_ids == []


async def test_an_unacknowledged_round_leaves_devices_changed() -> None:
    state = manager(FakeProducer(fail=RuntimeError("broker down")))
    state.replay(0, records(0, ["a"], range(5)), {})
    taken = state.take({0: 5})
    with pytest.raises(RuntimeError):
        await state.write(taken)
    assert state.take({0: 5}).device_ids == ["a"]


async def test_a_slot_reused_while_its_snapshot_was_in_flight_stays_changed() -> None:
    state = manager()
    state.replay(0, records(0, ["a"], range(5)), {})
    taken = state.take({0: 5})
    release_partitions(state.registry, [0])
    state.replay(0, records(0, ["z"], range(5)), {})  # takes a's slot
    await state.write(taken)
    assert state.take({0: 5}).device_ids == ["z"]


async def test_restored_devices_match_the_original_and_are_not_changed() -> None:
    source = manager()
    source.replay(1, records(1, ["a", "b"], range(20)), {})
    taken = source.take({1: 40})
    target = manager()
    target.replay(0, records(0, ["x"], range(3)), {})  # so slots differ
    chosen = {d: snapshot for d, value in zip(taken.device_ids, taken.values, strict=True)
              if (snapshot := decode_snapshot(value)) is not None}
    stamps = target.apply(1, chosen)
    assert stamps == {"a": 40, "b": 40}
    registry = target.registry
    for device_id in ("a", "b"):
        slot, origin = registry.slot(device_id), source.registry.slot(device_id)
        assert slot is not None and origin is not None and slot != origin
        assert registry.table["reg_partition"][slot] == 1
        assert registry.table["seen"][slot] == 20
        np.testing.assert_array_equal(registry.table["ring"][slot], source.registry.table["ring"][origin])
    assert target.take({1: 40}).device_ids == []
    # The replay then gives each device only what it has not seen.
    applied = target.replay(1, records(1, ["a", "b"], range(20, 22), first_offset=40), {"a": 41, "b": 40})
    assert applied == 3
    assert [registry.table["seen"][registry.slot(d)] for d in ("a", "b")] == [21, 22]


async def test_release_forgets_only_the_given_partitions() -> None:
    state = manager()
    state.replay(0, records(0, ["a"], range(3)), {})
    state.replay(1, records(1, ["b"], range(3)), {})
    assert await state.release([0]) == 1
    assert state.registry.slot("a") is None
    assert state.registry.slot("b") is not None
    assert await state.release([]) == 0
