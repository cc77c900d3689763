"""``streamer bench model``: records have every field, skips follow the rules (no timing assertions)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from models.architecture import ArchitectureSpec, build_forecaster
from models.backends import NumpyBackend
from models.bundle import BundleMetadata, load_bundle, save_bundle
from models.normalization import NormalizationSpec
from streamer.cli import main
from streamer.lab.bench.model import (
    FULL_SWEEP,
    QUICK_SWEEP,
    BenchPoint,
    Sweep,
    measure,
    plan,
    state_table_bytes,
)
from streamer.scoring.lstm import LSTMPredictor
from streamer.state.slot_table import SlotTable

REQUIRED = {
    "mode": str, "backend": str, "batch": int, "devices": int, "points_per_s": float, "seconds": float,
    "calls": int, "peak_rss_mb": float, "state_table_mb": float, "machine": str,
}


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = ArchitectureSpec(channels=1, units=4)
    path = tmp_path_factory.mktemp("bench") / "bundle"
    save_bundle(path, build_forecaster(spec, seed=3),
                BundleMetadata(architecture=spec, normalization=NormalizationSpec(), window=8, min_context=2,
                               channels=("value",)))
    return path


def _check_record(record: dict[str, Any]) -> None:
    for name, kind in REQUIRED.items():
        assert isinstance(record[name], kind), name
    assert record["points_per_s"] > 0
    assert record["peak_rss_mb"] > 0
    assert record["state_table_mb"] > 0
    assert record["calls"] >= 5
    assert record["batch"] <= record["devices"]
    for name in ("keras_backend", "speedup_vs_window_tensorflow", "blas_threads"):
        assert name in record
    assert "cores" in record["machine"] and "numpy" in record["machine"]


def test_plan_skips_batches_larger_than_the_fleet() -> None:
    points, skipped = plan(Sweep(("stateful",), ("numpy",), (64, 512), (256,), seconds=0.2))
    assert points == [BenchPoint("stateful", "numpy", 64, 256)]
    assert [(s.point.batch, s.reason) for s in skipped] == [(512, "batch larger than the fleet")]


def test_full_sweep_skips_only_what_it_documents() -> None:
    points, skipped = plan(FULL_SWEEP)
    assert all(p.batch <= p.devices for p in points)
    assert not any(p.backend == "keras" and p.devices > 100_000 for p in points)
    assert {p.devices for p in points if p.mode == "window" and p.batch == 1} == {1_000}
    sweep = FULL_SWEEP
    grid = math.prod(map(len, (sweep.modes, sweep.backends, sweep.batches, sweep.devices)))
    assert len(points) + len(skipped) == grid
    assert all(s.reason for s in skipped)
    quick, _ = plan(QUICK_SWEEP)
    assert {(p.mode, p.backend) for p in quick} >= {("stateful", "numpy"), ("window", "tensorflow"),
                                                     ("stateful", "tensorflow")}
    assert all((p.batch, p.devices) == (512, 100_000) for p in quick)


@pytest.mark.parametrize("mode", ["window", "stateful"])
def test_measure_in_process_returns_a_complete_record(bundle_dir: Path, mode: Any) -> None:
    record = measure(bundle_dir, BenchPoint(mode, "numpy", batch=64, devices=256), seconds=0.2)
    _check_record(record)
    assert (record["mode"], record["backend"], record["batch"], record["devices"]) == (mode, "numpy", 64, 256)


def test_cli_writes_a_json_list_of_records_and_skips_oversized_batches(
    bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    code = main(["bench", "model", "--bundle", str(bundle_dir), "--json", str(out), "--seconds", "0.2",
                 "--modes", "stateful", "--backends", "numpy", "--batches", "64", "512", "--devices", "256",
                 "--blas-threads", "1"])
    assert code == 0
    records = json.loads(out.read_text())
    assert isinstance(records, list) and len(records) == 1
    _check_record(records[0])
    assert (records[0]["mode"], records[0]["batch"], records[0]["blas_threads"]) == ("stateful", 64, 1)
    assert "batch larger than the fleet" in capsys.readouterr().out


def test_cli_fails_clearly_without_a_bundle(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "missing"
    assert main(["bench", "model", "--bundle", str(missing)]) == 1
    assert f"{missing}: not a model bundle" in caplog.text


def test_state_table_bytes_counts_the_numpy_backend_state(bundle_dir: Path) -> None:
    table = SlotTable(64)
    predictor = LSTMPredictor(table, load_bundle(bundle_dir), mode="stateful", backend="numpy")
    backend = predictor.backend
    assert isinstance(backend, NumpyBackend)
    assert state_table_bytes(table, predictor) == table.nbytes() + backend.state.nbytes
