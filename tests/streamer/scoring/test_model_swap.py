"""Swapping the model under a running pipeline: checks, rebuild from ring buffers, the switch."""

from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt
import pytest

from models.bundle import ModelBundle, default_bundle_path, load_bundle
from models.registry import BundleRegistry
from streamer.codec import ReadingBatch
from streamer.config import Config, load_config
from streamer.scoring.model_swap import ModelSwap
from streamer.scoring.pipeline import ScoringPipeline
from streamer.state.snapshots import RowSchema
from tests.bundle_variants import bundle_variant

START_MS = 1_700_000_000_000
DEVICES = [f"dev-{i}" for i in range(12)]


def config(mode: str = "stateful") -> Config:
    base = load_config(None, environ={})
    replace = msgspec.structs.replace
    return replace(
        base,
        predictor=replace(base.predictor, lstm=replace(base.predictor.lstm, mode=mode)),
        thresholds=replace(base.thresholds, warmup=10,
                           record_gate=replace(base.thresholds.record_gate, enabled=False)),
        buffers=replace(base.buffers, initial_devices=4),
        alerts=replace(base.alerts, resolve_after=5),
    )


def readings(steps: int, seed: int = 1, wave: float = 1.0) -> npt.NDArray[np.float64]:
    """(steps, devices): float32-exact values (the ring buffer keeps float32)."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None]
    values = 10 + wave * np.sin(t / 5 + np.arange(len(DEVICES))) + rng.normal(0, 0.05, (steps, len(DEVICES)))
    return values.astype(np.float32).astype(np.float64)


def step_batch(step: int, values: npt.NDArray[np.float64], devices: Sequence[str] = DEVICES) -> ReadingBatch:
    n = len(devices)
    return ReadingBatch(device_ids=list(devices), ts_ms=np.full(n, START_MS + step * 1000, np.int64),
                        values=values.reshape(n, 1), fetched_at=np.zeros(n),
                        record_index=np.arange(n, dtype=np.intp))


def swap_in(pipeline: ScoringPipeline, bundle: ModelBundle, slots_per_job: int = 5) -> ModelSwap:
    swap = ModelSwap(pipeline, bundle)
    while not swap.rebuild_next(slots_per_job):
        pass
    return swap


@pytest.mark.parametrize("mode", ["stateful", "window"])
def test_a_swapped_in_model_forecasts_as_if_it_had_run_all_along(tmp_path: Path, mode: str) -> None:
    # Fewer readings than the ring buffer holds: the rebuild sees each device's whole history,
    # so the same weights under another version must forecast exactly what the running model does.
    values = readings(60)
    swapped, untouched = ScoringPipeline(config(mode)), ScoringPipeline(config(mode))
    for step in range(40):
        swapped.score(step_batch(step, values[step]))
        untouched.score(step_batch(step, values[step]))
    _, version = bundle_variant(tmp_path / "same", 1)
    swap = ModelSwap(swapped, load_bundle(tmp_path / "same"))
    for step in range(40, 45):  # batches go on while the swap is prepared, a few devices per job
        swap.rebuild_next(3)
        swapped.score(step_batch(step, values[step]))
        untouched.score(step_batch(step, values[step]))
    while not swap.rebuild_next(3):
        pass
    swap.switch()
    assert swapped.predictor.version == version != untouched.predictor.version
    slots = np.arange(len(DEVICES))
    for step in range(45, 60):
        a = swapped.score(step_batch(step, values[step]))
        b = untouched.score(step_batch(step, values[step]))
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(swapped.predictor.forecast(slots), untouched.predictor.forecast(slots),
                               rtol=1e-5)


@pytest.mark.parametrize("mode", ["stateful", "window"])
def test_a_model_swapped_in_after_more_readings_than_the_ring_holds_carries_the_normalisation(
        tmp_path: Path, mode: str) -> None:
    # 200 readings, a ring of 64: the running mean and variance (spanning 256) cannot be computed
    # again from the ring, so they are carried over with the reading count. The same weights then
    # forecast nearly what the running model does (the ring's readings are normalised with today's
    # mean and variance, not each one's own), and exactly so once every LSTM state (window mode:
    # every input of the window) has been restarted after the swap: one window (32) later.
    values = readings(250, seed=5, wave=3.0)
    swapped, untouched, replayed = (ScoringPipeline(config(mode)) for _ in range(3))
    for step in range(200):
        for pipeline in (swapped, untouched, replayed):
            pipeline.score(step_batch(step, values[step]))
    bundle_variant(tmp_path / "same", 9)
    swap_in(swapped, load_bundle(tmp_path / "same")).switch()
    slots = np.arange(len(DEVICES))
    # For scale: the same rebuild without carrying anything over (readings replayed as new).
    replayed.rebuild_model(slots)
    first = np.abs(swapped.predictor.forecast(slots) - untouched.predictor.forecast(slots)).max()
    without = np.abs(replayed.predictor.forecast(slots) - untouched.predictor.forecast(slots)).max()
    assert first < 0.5 * without
    for step in range(200, 250):
        for pipeline in (swapped, untouched):
            pipeline.score(step_batch(step, values[step]))
        if step >= 200 + 32:
            np.testing.assert_allclose(swapped.predictor.forecast(slots), untouched.predictor.forecast(slots),
                                       rtol=1e-9)


def test_every_reading_is_scored_once_and_alerts_name_the_new_version_from_the_switch(tmp_path: Path) -> None:
    values = readings(120, seed=3, wave=0.0)
    values[100, 0] += 20.0  # a spike after the switch
    values[70, 1] += 20.0  # and one before it
    pipeline = ScoringPipeline(config())
    old_version = pipeline.predictor.version
    _, new_version = bundle_variant(tmp_path / "new", 2, head_shift=0.05)
    processed = 0
    versions: list[tuple[int, str, str]] = []
    swap: ModelSwap | None = None
    switched_at = None
    for step in range(120):
        if step == 65:
            swap = ModelSwap(pipeline, load_bundle(tmp_path / "new"))
        if swap is not None and swap.rebuild_next(1):  # one device between two batches
            swap.switch()
            swap, switched_at = None, step
        result = pipeline.score(step_batch(step, values[step]))
        processed += result.scored + result.warmup
        versions += [(step, alert.device_id, alert.model_version) for alert in result.alerts
                     if alert.event == "open"]
    assert processed == 120 * len(DEVICES)  # none skipped, none twice
    assert switched_at == 65 + len(DEVICES) - 1 and pipeline.predictor.version == new_version
    assert {v for s, _, v in versions if s < switched_at} == {old_version}
    assert {v for s, _, v in versions if s >= switched_at} == {new_version}
    assert ("dev-1", old_version) in {(d, v) for s, d, v in versions if s == 70}
    assert ("dev-0", new_version) in {(d, v) for s, d, v in versions if s == 100}


def test_an_episode_open_across_a_swap_keeps_the_id_and_version_it_opened_with(tmp_path: Path) -> None:
    values = readings(110, seed=3, wave=0.0)
    values[60, 0] += 20.0  # opens before the swap, resolves after it
    values[90, 0] += 20.0  # opens after it
    pipeline = ScoringPipeline(config())
    old_version = pipeline.predictor.version
    _, new_version = bundle_variant(tmp_path / "new", 10, head_shift=0.05)
    events = []
    for step in range(110):
        if step == 62:
            swap_in(pipeline, load_bundle(tmp_path / "new")).switch()
        alerts = pipeline.score(step_batch(step, values[step])).alerts
        events += [(step, a) for a in alerts if a.device_id == "dev-0"]
    first = [a for step, a in events if 60 <= step < 90]
    assert next((step, a.event) for step, a in events if 60 <= step < 90) == (60, "open")
    assert [a.event for a in first] == ["open", "resolve"] and [s for s, _ in events if s >= 60][1] > 62
    assert {a.alert_id for a in first} == {first[0].alert_id}
    assert {a.model_version for a in first} == {old_version}
    second = [a for step, a in events if step >= 90]
    assert second[0].event == "open" and second[0].model_version == new_version
    assert second[0].alert_id != first[0].alert_id


def test_the_snapshot_layout_after_a_swap_keeps_its_base_and_changes_its_model_part(tmp_path: Path) -> None:
    pipeline = ScoringPipeline(config())
    table = pipeline.registry.table

    def schema() -> RowSchema:
        return RowSchema.build(table, pipeline.extra_rows(), pipeline.state_identity(),
                               pipeline.model_fields())

    before = schema()
    bundle_variant(tmp_path / "new", 3, head_shift=0.05)
    swap = ModelSwap(pipeline, load_bundle(tmp_path / "new"))
    assert schema() == before  # the prepared model's fields are transient: not in snapshots
    while not swap.rebuild_next(100):
        pass
    swap.switch()
    after = schema()
    assert after.base_fingerprint == before.base_fingerprint
    assert after.fingerprint != before.fingerprint
    assert after.row_bytes == before.row_bytes  # same architecture, same layout
    # A fresh pipeline on the new bundle lays rows out exactly as the swapped one.
    fresh_config = msgspec.structs.replace(
        config(), predictor=msgspec.structs.replace(
            config().predictor, lstm=msgspec.structs.replace(config().predictor.lstm,
                                                               bundle=str(tmp_path / "new"))))
    fresh = ScoringPipeline(fresh_config)
    fresh_schema = RowSchema.build(fresh.registry.table, fresh.extra_rows(), fresh.state_identity(),
                                   fresh.model_fields())
    assert fresh_schema.fingerprint == after.fingerprint


def test_abandoning_a_swap_leaves_the_running_model_and_frees_its_fields(tmp_path: Path) -> None:
    pipeline = ScoringPipeline(config())
    fields = pipeline.registry.table.fields
    bundle_variant(tmp_path / "new", 4)
    swap = ModelSwap(pipeline, load_bundle(tmp_path / "new"))
    assert len(pipeline.registry.table.fields) > len(fields)
    swap.abandon()
    assert pipeline.registry.table.fields == fields and pipeline.staged is None


def test_a_registry_without_current_runs_the_configured_bundle_and_with_one_runs_it(tmp_path: Path) -> None:
    registry = BundleRegistry(tmp_path / "registry")
    version = registry.add(bundle_variant(tmp_path / "new", 8)[0])
    base = config()
    with_registry = msgspec.structs.replace(base, predictor=msgspec.structs.replace(
        base.predictor, lstm=msgspec.structs.replace(base.predictor.lstm, registry=str(registry.root))))
    assert ScoringPipeline(with_registry).predictor.version == load_bundle(default_bundle_path()).version
    registry.promote(version)
    assert ScoringPipeline(with_registry).predictor.version == version
