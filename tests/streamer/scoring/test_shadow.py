"""A candidate scored in shadow: same readings, its own decisions, nothing changed for the running model."""

from pathlib import Path

import msgspec
import numpy as np
import pytest

from models.bundle import load_bundle
from streamer.config import Config
from streamer.scoring.pipeline import ScoringPipeline
from streamer.scoring.shadow import ShadowScorer, in_shadow
from tests.bundle_variants import bundle_variant
from tests.streamer.scoring.test_model_swap import DEVICES, config, readings, step_batch


def shadowed(pipeline: ScoringPipeline, bundle_dir: Path, cfg: Config | None = None) -> ShadowScorer:
    shadow = ShadowScorer(cfg or pipeline.config, pipeline.registry, load_bundle(bundle_dir),
                          lambda: pipeline.predictor)
    pipeline.shadow = shadow
    while not shadow.rebuild_next(5):
        pass
    return shadow


def spiky(steps: int) -> np.ndarray:
    values = readings(steps, seed=4, wave=0.0)
    for step, device in ((50, 0), (70, 3), (90, 7)):
        values[step, device] += 20.0
    return values


def test_a_candidate_identical_to_the_running_model_agrees_on_every_flag_and_alert(tmp_path: Path) -> None:
    pipeline = ScoringPipeline(config())
    _, version = bundle_variant(tmp_path / "same", 1)
    shadowed(pipeline, tmp_path / "same")  # from the first reading: its state follows the running model's
    values = spiky(110)
    alerts, shadow_alerts, flags = [], [], {"both": 0, "current_only": 0, "candidate_only": 0}
    for step in range(110):
        result = pipeline.score(step_batch(step, values[step]))
        alerts += result.alerts
        shadow_alerts += result.shadow_alerts
        assert result.shadow is not None
        for key, count in result.shadow.flags.items():
            flags[key] += count
    assert {(a.device_id, a.ts, a.event) for a in alerts} == {
        (a.device_id, a.ts, a.event) for a in shadow_alerts}
    assert {a.model_version for a in shadow_alerts} == {version}
    assert flags["both"] >= 3 and flags["current_only"] == flags["candidate_only"] == 0


def test_the_shadow_changes_nothing_the_running_model_decides(tmp_path: Path) -> None:
    plain, watched = ScoringPipeline(config()), ScoringPipeline(config())
    values = spiky(110)
    bundle_variant(tmp_path / "other", 2, head_shift=0.3)
    for step in range(110):
        if step == 30:  # started mid-stream: rebuilt from the ring buffers
            shadowed(watched, tmp_path / "other")
        a, b = plain.score(step_batch(step, values[step])), watched.score(step_batch(step, values[step]))
        np.testing.assert_array_equal(a.scores, b.scores)
        assert [(x.alert_id, x.event, x.score) for x in a.alerts] == [
            (x.alert_id, x.event, x.score) for x in b.alerts]
    watched_shadow = watched.shadow
    assert watched_shadow is not None
    fields = watched.registry.table.fields
    watched_shadow.stop()
    assert len(watched.registry.table.fields) < len(fields)


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_the_fraction_bounds_which_devices_the_candidate_scores(tmp_path: Path, fraction: float) -> None:
    base = config()
    replace = msgspec.structs.replace
    lstm = base.predictor.lstm
    cfg = replace(base, predictor=replace(base.predictor, lstm=replace(
        lstm, shadow=replace(lstm.shadow, fraction=fraction))))
    ids = [f"device-{i}" for i in range(4000)]
    share = float(np.mean(in_shadow(ids, fraction)))
    assert abs(share - fraction) < 0.03
    assert in_shadow(ids, fraction).tolist() == in_shadow(ids, fraction).tolist()  # the same on every daemon
    pipeline = ScoringPipeline(cfg)
    bundle_variant(tmp_path / "other", 3)
    shadowed(pipeline, tmp_path / "other", cfg)
    values = readings(60)
    scored = 0
    for step in range(60):
        result = pipeline.score(step_batch(step, values[step]))
        assert result.shadow is not None
        scored += result.shadow.scored
    members = int(np.count_nonzero(in_shadow(DEVICES, fraction)))
    assert scored == members * (60 - cfg.thresholds.warmup)
