"""A device's snapshot restores its whole detector state, bit for bit, in any slot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pytest

from streamer.codec import ReadingBatch
from streamer.config import Config, load_config
from streamer.scoring.pipeline import ScoringPipeline
from streamer.state.registry import BOOKKEEPING_FIELDS
from streamer.state.snapshots import (
    FORMAT,
    RowSchema,
    Snapshot,
    decode_snapshot,
    encode_snapshot,
    put_rows,
    row_values,
    take_rows,
)

START_MS = 1_700_000_000_000
STEP_MS = 100
DEVICES = [f"dev-{i}" for i in range(6)]


def make_config(*, kind: str = "lstm", mode: str = "stateful", method: str = "zscore",
                window: int = 64, source: str = "residual", context_span: int | None = None,
                tolerance: float = 0.0) -> Config:
    base = load_config(None, environ={})
    replace = msgspec.structs.replace
    predictor = replace(base.predictor, kind=kind, lstm=replace(base.predictor.lstm, mode=mode))
    # Range novelty on, so its per-device range is part of the state that must move
    # (and the likelihood, which judges sustained departures, sees the lone spike).
    # The stuck-sensor detector flags dev-1 before the move (see readings()), so its runs move too.
    stuck = replace(base.thresholds.stuck, min_run=10, factor=3.0, min_readings=50, tolerance=tolerance)
    thresholds = replace(base.thresholds, method=method, warmup=30,
                         range_novelty=replace(base.thresholds.range_novelty, margin=0.02, min_readings=20),
                         stuck=stuck,
                         likelihood=replace(base.thresholds.likelihood, history=200, learning_period=40,
                                            reestimation_period=10, source=source,
                                            pattern_learning=40, pattern_context_span=context_span))
    return replace(base, predictor=predictor, thresholds=thresholds,
                   buffers=replace(base.buffers, window=window, initial_devices=4))


def readings(step_from: int, steps: int, devices: Sequence[str] = DEVICES) -> ReadingBatch:
    """One reading per device and step: noisy sines, a spike on dev-0 at step 130, dev-1 stuck at 100-149."""
    rng = np.random.default_rng(step_from)
    ids: list[str] = []
    ts: list[int] = []
    values: list[float] = []
    for step in range(step_from, step_from + steps):
        for d, device_id in enumerate(devices):
            value = 10.0 + d + np.sin(step / 7.0 + d) + 0.05 * rng.standard_normal()
            if device_id == "dev-0" and step == 130:
                value += 25.0
            if device_id == "dev-1" and 100 <= step < 150:
                value = 11.0 + np.sin(100 / 7.0 + 1)
            ids.append(device_id)
            ts.append(START_MS + step * STEP_MS)
            values.append(float(value))
    n = len(ids)
    return ReadingBatch(device_ids=ids, ts_ms=np.asarray(ts, np.int64),
                        values=np.asarray(values, np.float64).reshape(n, 1),
                        fetched_at=np.full(n, START_MS / 1000.0), record_index=np.arange(n))


def feed(pipeline: ScoringPipeline, step_from: int, steps: int, chunk: int = 10) -> list[Any]:
    """Score in chunks of steps; returns per chunk (scores, alert ids and events)."""
    out: list[Any] = []
    for start in range(step_from, step_from + steps, chunk):
        result = pipeline.score(readings(start, chunk))
        out.append((result.scores.tobytes(), [(a.alert_id, a.event, a.ts) for a in result.alerts]))
    return out


def state_of(pipeline: ScoringPipeline, device_id: str) -> dict[str, bytes]:
    """Every snapshotted field of one device, as raw bytes (NaN-safe equality)."""
    slot = pipeline.registry.slot(device_id)
    assert slot is not None
    table = pipeline.registry.table
    state = {name: np.ascontiguousarray(table[name][slot]).tobytes() for name in table.fields
             if name not in BOOKKEEPING_FIELDS}
    extras = pipeline.extra_rows()
    if extras is not None:
        for name, value in extras.read_rows(np.array([slot])).items():
            state[name] = value.tobytes()
    return state


def schema_of(pipeline: ScoringPipeline) -> RowSchema:
    return RowSchema.build(pipeline.registry.table, pipeline.extra_rows(), pipeline.state_identity())


def move(source: ScoringPipeline, target: ScoringPipeline, devices: Sequence[str]) -> None:
    """Snapshot ``devices`` of ``source`` and restore them into ``target``."""
    schema = schema_of(source)
    slots = np.array([source.registry.slot(d) for d in devices], dtype=np.intp)
    rows = take_rows(source.registry.table, source.extra_rows(), schema, slots)
    target_slots = target.registry.resolve(list(devices))
    put_rows(target.registry.table, target.extra_rows(), schema_of(target), target_slots, rows)


CASES = [
    pytest.param({"kind": "lstm", "mode": "stateful", "method": "zscore"}, id="lstm-stateful-zscore"),
    pytest.param({"kind": "lstm", "mode": "stateful", "method": "likelihood"}, id="lstm-stateful-likelihood"),
    pytest.param({"kind": "lstm", "mode": "stateful", "method": "likelihood", "source": "pattern"},
                 id="lstm-stateful-likelihood-pattern"),
    pytest.param({"kind": "lstm", "mode": "stateful", "method": "likelihood", "source": "pattern",
                  "context_span": 10},
                 id="lstm-stateful-likelihood-pattern-context"),
    pytest.param({"kind": "lstm", "mode": "window", "method": "zscore", "window": 16}, id="lstm-window"),
    pytest.param({"kind": "baseline", "method": "zscore"}, id="baseline-zscore"),
    pytest.param({"kind": "baseline", "method": "zscore", "tolerance": 0.001},
                 id="baseline-zscore-stuck-tolerance"),
]


@pytest.mark.parametrize("settings", CASES)
def test_restored_devices_equal_the_original_bit_for_bit_and_score_identically(
    settings: dict[str, Any],
) -> None:
    config = make_config(**settings)
    original = ScoringPipeline(config)
    feed(original, 0, 120)
    moved = ScoringPipeline(config)
    # Other devices first, so the moved ones land in different slots (and past the first growth).
    moved.score(readings(0, 3, devices=[f"other-{i}" for i in range(5)]))
    move(original, moved, DEVICES)
    assert state_of(original, "dev-1")["stk_stuck"] == np.array([True]).tobytes()  # stuck when it moves
    for device_id in DEVICES:
        assert original.registry.slot(device_id) != moved.registry.slot(device_id)
        assert state_of(moved, device_id) == state_of(original, device_id), device_id
    # The same future readings give the same scores and alerts (the spike at step 130 included).
    continued = feed(original, 120, 40)
    assert feed(moved, 120, 40) == continued
    assert any(alerts for _, alerts in continued), "the spike should alert after the move"
    for device_id in DEVICES:
        assert state_of(moved, device_id) == state_of(original, device_id), device_id


def test_a_fresh_pipeline_without_the_snapshot_warms_up_instead() -> None:
    config = make_config()
    original = ScoringPipeline(config)
    feed(original, 0, 120)
    cold = ScoringPipeline(config)
    assert feed(cold, 120, 40) != feed(original, 120, 40)
    assert cold.registry.warming_up(config.thresholds.warmup) == 0  # warmed up during those 40 steps


def test_lstm_state_rows_are_part_of_the_snapshot() -> None:
    pipeline = ScoringPipeline(make_config())
    feed(pipeline, 0, 50)
    schema = schema_of(pipeline)
    names = schema.dtype.names or ()
    assert {"ring", "seen", "thr_mean", "ep_open", "stk_run", "stk_longest"} <= set(names)
    extra = [field.name for field in pipeline.extra_rows().row_fields]  # type: ignore[union-attr]
    assert extra and set(extra) <= set(names)
    assert not set(BOOKKEEPING_FIELDS) & set(names)
    slot = np.array([pipeline.registry.slot("dev-2")], dtype=np.intp)
    row = take_rows(pipeline.registry.table, pipeline.extra_rows(), schema, slot)[0]
    values = row_values(schema, row)
    assert values["seen"] == 50
    assert all(np.abs(values[name]).sum() > 0 for name in extra)  # live LSTM states, not zeros


@pytest.mark.parametrize("change", [
    {"window": 32},  # ring buffer shape
    {"method": "likelihood"},  # other threshold
    {"kind": "baseline"},  # other predictor
    {"mode": "window"},  # other predictor layout
])
def test_schema_fingerprint_changes_with_layout_method_or_model(change: dict[str, Any]) -> None:
    reference = schema_of(ScoringPipeline(make_config()))
    assert schema_of(ScoringPipeline(make_config())).fingerprint == reference.fingerprint
    assert schema_of(ScoringPipeline(make_config(**change))).fingerprint != reference.fingerprint


def test_put_rows_rejects_rows_of_another_layout() -> None:
    pipeline = ScoringPipeline(make_config(kind="baseline"))
    schema = schema_of(pipeline)
    slots = pipeline.registry.resolve(["a"])
    with pytest.raises(ValueError, match="rows"):
        put_rows(pipeline.registry.table, None, schema, slots, [b"\x00" * (schema.row_bytes * 2)])


def test_snapshot_envelope_round_trips_and_rejects_garbage() -> None:
    snapshot = Snapshot(FORMAT, "abc", 3, 1234, START_MS, b"\x00\x01row")
    assert decode_snapshot(encode_snapshot(snapshot)) == snapshot
    assert decode_snapshot(b"not msgpack \xff") is None
    assert decode_snapshot(encode_snapshot(Snapshot(FORMAT + 1, "abc", 3, 1, 0, b""))) is None


def test_rows_are_packed_field_after_field() -> None:
    pipeline = ScoringPipeline(make_config())
    schema = schema_of(pipeline)
    table = pipeline.registry.table
    extras = pipeline.extra_rows()
    assert extras is not None
    expected = sum(table[name][0].nbytes for name in table.fields if name not in BOOKKEEPING_FIELDS)
    expected += sum(field.dtype.itemsize * int(np.prod(field.shape)) for field in extras.row_fields)
    assert schema.row_bytes == expected


def _bits(array: npt.NDArray[Any]) -> bytes:
    return np.ascontiguousarray(array).tobytes()


def test_take_then_put_into_the_same_slots_is_the_identity() -> None:
    pipeline = ScoringPipeline(make_config(method="likelihood"))
    feed(pipeline, 0, 60)
    schema = schema_of(pipeline)
    extras = pipeline.extra_rows()
    slots = np.arange(len(DEVICES), dtype=np.intp)
    before = {name: _bits(pipeline.registry.table[name]) for name in pipeline.registry.table.fields}
    rows = take_rows(pipeline.registry.table, extras, schema, slots)
    put_rows(pipeline.registry.table, extras, schema, slots, rows)
    after = {name: _bits(pipeline.registry.table[name]) for name in pipeline.registry.table.fields}
    assert after == before
