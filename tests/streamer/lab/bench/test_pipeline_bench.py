"""``streamer bench pipeline``: steady state is reached, records are complete, the CLI runs a worker.

No timing assertions: the figures depend on the machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from models.architecture import ArchitectureSpec, build_forecaster
from models.bundle import BundleMetadata, save_bundle
from models.normalization import NormalizationSpec
from streamer.cli import main
from streamer.codec import ReadingDecoder
from streamer.config import Config, load_config, write_config_file
from streamer.lab.bench.model import COUNT_FIELD
from streamer.lab.bench.pipeline import (
    FULL_SWEEP,
    KERAS_MAX_DEVICES,
    QUICK_SWEEP,
    PipelinePoint,
    _Feed,
    grid,
    measure,
    point_config,
    steady_state,
)
from streamer.scoring.lstm import LSTMPredictor
from streamer.scoring.pipeline import ScoringPipeline

WINDOW = 8


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = ArchitectureSpec(channels=1, units=4)
    path = tmp_path_factory.mktemp("pipeline-bench") / "bundle"
    save_bundle(path, build_forecaster(spec, seed=5),
                BundleMetadata(architecture=spec, normalization=NormalizationSpec(), window=WINDOW,
                               min_context=2, channels=("value",)))
    return path


@pytest.fixture(scope="module")
def config(bundle_dir: Path) -> Config:
    base = load_config(None)
    lstm = msgspec.structs.replace(base.predictor.lstm, bundle=str(bundle_dir))
    batching = msgspec.structs.replace(base.batching, max_batch=128)
    return msgspec.structs.replace(base, predictor=msgspec.structs.replace(base.predictor, lstm=lstm),
                                   batching=batching)


def test_full_sweep_covers_every_mode_backend_and_fleet_but_keras_at_a_million() -> None:
    measured = {(p.mode, p.backend, p.devices) for p in FULL_SWEEP.points}
    assert len(measured) == 2 * 3 * 3 - 2
    assert all(p.devices <= KERAS_MAX_DEVICES for p in FULL_SWEEP.points if p.backend == "keras")
    assert ("stateful", "numpy", 100_000) in {(p.mode, p.backend, p.devices) for p in QUICK_SWEEP.points}
    assert ("stateful", "numpy", 1_000_000) in {(p.mode, p.backend, p.devices) for p in QUICK_SWEEP.points}
    _, skipped = grid(["window"], ["keras"], [1_000_000])
    assert [point.devices for point, _ in skipped] == [1_000_000]


def test_point_config_sizes_the_registry_for_the_fleet_and_picks_the_predictor(config: Config) -> None:
    fleet = config.buffers.max_devices * 2
    derived = point_config(config, PipelinePoint("window", "tensorflow", fleet))
    assert derived.buffers.initial_devices == fleet
    assert derived.buffers.max_devices == fleet
    assert (derived.predictor.kind, derived.predictor.lstm.mode, derived.predictor.lstm.backend) == (
        "lstm", "window", "tensorflow")
    assert derived.predictor.lstm.bundle == config.predictor.lstm.bundle


@pytest.mark.parametrize("mode", ["stateful", "window"])
def test_steady_state_puts_every_device_past_warm_up(config: Config, mode: Any) -> None:
    devices = 300
    derived = point_config(config, PipelinePoint(mode, "numpy", devices))
    readings = derived.readings
    decoder = ReadingDecoder(readings.channels, device_id_pattern=readings.device_id_pattern,
                             max_message_bytes=readings.max_message_bytes,
                             max_future_ms=readings.max_future_ms)
    pipeline = ScoringPipeline(derived)
    rng = np.random.default_rng(1)
    feed = _Feed(devices, 128, list(readings.channels), rng)
    admitted = pipeline.score(decoder.decode(feed.records(np.arange(devices), np.zeros(devices, np.int64)))
                              .readings)
    assert admitted.scored == 0  # one reading each: all still warming up
    steady_state(pipeline, decoder, feed, devices, rng)
    table = pipeline.registry.table
    assert (table["seen"][:devices] >= pipeline.warmup).all()
    assert isinstance(pipeline.predictor, LSTMPredictor)
    counts = table[COUNT_FIELD][:devices]
    assert ((counts >= WINDOW) & (counts < 2 * WINDOW)).all()
    result = pipeline.score(decoder.decode(feed.next_batch()).readings)
    assert result.scored == 128  # every reading of a timed batch is scored
    assert not result.rejections
    assert np.isfinite(result.scores).all()


def test_measure_in_process_returns_a_complete_record(config: Config) -> None:
    record = measure(config, PipelinePoint("stateful", "numpy", 300), seconds=0.2, warmup_calls=1)
    assert (record["mode"], record["backend"], record["devices"], record["batch"]) == (
        "stateful", "numpy", 300, 128)
    assert record["readings_per_s"] > 0
    assert record["calls"] >= 5
    shares = record["decode_share"] + record["model_share"] + record["pipeline_share"]
    assert shares == pytest.approx(1.0, abs=0.01)
    assert record["model_share"] > 0
    assert record["peak_rss_mb"] > 0 and record["state_table_mb"] > 0
    assert record["threshold_method"] == config.thresholds.method
    assert record["window"] == WINDOW
    assert "cores" in record["machine"]
    assert isinstance(record["load_average"], list)


def test_a_shadow_point_scores_its_share_of_every_timed_reading_in_shadow_too(config: Config) -> None:
    record = measure(config, PipelinePoint("stateful", "numpy", 300, shadow=0.5), seconds=0.2, warmup_calls=1)
    assert record["shadow_fraction"] == 0.5 and record["readings_per_s"] > 0
    # Every reading of a member device is judged in shadow (warmed up with the fleet): about half.
    assert 0.35 < record["shadow_scored_share"] < 0.65
    plain = measure(config, PipelinePoint("stateful", "numpy", 300), seconds=0.2, warmup_calls=1)
    assert plain["shadow_scored_share"] == 0.0


def test_cli_runs_each_configuration_in_a_worker_and_writes_json(config: Config, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config_path = tmp_path / "config.json"
    write_config_file(config, config_path)
    out = tmp_path / "pipeline.json"
    code = main(["bench", "pipeline", "--config", str(config_path), "--modes", "window",
                 "--backends", "numpy", "--devices", "200", "--seconds", "0.2", "--json", str(out)])
    assert code == 0
    records = json.loads(out.read_text())
    assert [(r["mode"], r["backend"], r["devices"]) for r in records] == [("window", "numpy", 200)]
    assert records[0]["readings_per_s"] > 0
    assert "1 records written" in capsys.readouterr().out
