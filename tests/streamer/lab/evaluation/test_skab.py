"""`streamer evaluate skab` on a tiny synthetic corpus in SKAB's layout."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np
import pytest

from streamer.cli import main
from streamer.config import Config
from streamer.lab.evaluation import skab
from streamer.lab.evaluation.recipe import configured

ROWS = 600
ANOMALY = (470, 540)  # first and last anomalous row
START = np.datetime64("2020-03-09T10:00:00", "s")


def write_experiment(path: Path, *, seed: int, anomalous: bool = True, rows: int = ROWS) -> None:
    """Eight sensors at 1 Hz (one 2 s gap); a level shift on Current and Pressure in the test part."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows, dtype=np.float64)
    seconds = np.arange(rows) + (np.arange(rows) >= 300)  # row 300 comes 2 s after row 299
    levels = np.array([0.03, 0.04, 1.0, 0.1, 70.0, 25.0, 230.0, 32.0])
    values = levels + 0.02 * levels * np.sin(2 * np.pi * t[:, None] / (20 + 3 * np.arange(8)))
    values += rng.normal(0, 0.002, values.shape) * levels
    anomaly = np.zeros(rows)
    changepoint = np.zeros(rows)
    if anomalous:
        first, last = ANOMALY
        values[first : last + 1, 2:4] *= 3.0
        anomaly[first : last + 1] = 1
        changepoint[[first, last + 1]] = 1  # SKAB marks the first normal row after the anomaly too
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        handle.write(";".join(skab.HEADER) + "\n")
        for row in range(rows):
            stamp = str(START + np.timedelta64(int(seconds[row]), "s")).replace("T", " ")
            labels = (f"{anomaly[row]:.1f}", f"{changepoint[row]:.1f}")
            fields = [stamp, *(f"{v:.6f}" for v in values[row]), *labels]
            handle.write(";".join(fields) + "\n")


def write_corpus(root: Path) -> None:
    for seed, key in enumerate(["valve1/0", "valve1/1", "valve1/10", "other/2"]):
        write_experiment(root / f"{key}.csv", seed=seed)
    # A normal run, as SKAB ships it: not an experiment.
    write_experiment(root / "anomaly-free" / "anomaly-free.csv", seed=9, anomalous=False)


def test_read_corpus_parses_the_layout(tmp_path: Path) -> None:
    write_corpus(tmp_path)
    experiments = skab.read_corpus(tmp_path)
    assert [item.key for item in experiments] == ["other/2", "valve1/0", "valve1/1", "valve1/10"]
    first = experiments[0]
    assert len(first) == ROWS and first.values.shape == (ROWS, len(skab.SENSORS))
    assert np.flatnonzero(first.anomaly).tolist() == list(range(ANOMALY[0], ANOMALY[1] + 1))
    assert np.flatnonzero(first.changepoint).tolist() == [ANOMALY[0], ANOMALY[1] + 1]
    assert first.ts_ms[1] - first.ts_ms[0] == 1000 and first.ts_ms[300] - first.ts_ms[299] == 2000
    assert first.ts_ms[0] == START.astype("datetime64[ms]").astype(np.int64)
    assert first.test == slice(400, ROWS)
    assert all(series.shape == (400, 8) for series in skab.training_series(experiments).values())


def test_read_experiment_names_the_bad_file(tmp_path: Path) -> None:
    write_experiment(tmp_path / "valve1" / "0.csv", seed=0)
    text = (tmp_path / "valve1" / "0.csv").read_text()
    lines = text.splitlines()
    (tmp_path / "valve1" / "1.csv").write_text(text.replace("Current", "Amps", 1))
    with pytest.raises(ValueError, match=r"valve1/1\.csv: header"):
        skab.read_experiment(tmp_path, "valve1/1")
    (tmp_path / "valve1" / "2.csv").write_text("\n".join([*lines[:11], lines[10], *lines[11:]]) + "\n")
    with pytest.raises(ValueError, match=r"2\.csv: data row 11 .* not later"):
        skab.read_experiment(tmp_path, "valve1/2")
    (tmp_path / "valve1" / "3.csv").write_text("\n".join(lines[:401]) + "\n")
    with pytest.raises(ValueError, match=r"3\.csv: 400 rows, none left for testing"):
        skab.read_experiment(tmp_path, "valve1/3")
    (tmp_path / "valve1" / "4.csv").write_text(text.replace(";1.0;", ";oops;", 1))
    with pytest.raises(ValueError, match=r"4\.csv:\d+: could not convert"):
        skab.read_experiment(tmp_path, "valve1/4")
    with pytest.raises(FileNotFoundError, match="no SKAB experiments"):
        skab.list_experiments(tmp_path / "missing")


def baseline_config(method: str) -> Config:
    """The daemon's path with the damped-trend baseline: no bundle to train."""
    config = configured(Config(), method=method, mode=None, bundle=None, channels=skab.SENSORS)
    predictor = msgspec.structs.replace(config.predictor, kind="baseline")
    return msgspec.structs.replace(config, predictor=predictor)


def test_evaluate_scores_every_test_row_of_the_replayed_fleet(tmp_path: Path) -> None:
    write_corpus(tmp_path)
    experiments = skab.read_corpus(tmp_path)
    report = skab.evaluate(baseline_config("zscore"), experiments)
    assert report.replay.readings == len(experiments) * ROWS and not report.replay.rejected
    for item in experiments:
        counts = report.per_experiment[item.key]
        assert counts.tp + counts.tn + counts.fp + counts.fn == ROWS - 400
        assert counts.tp > 0 and report.episodes[item.key] >= 1, (item.key, counts)
    assert report.outliers.tp == sum(c.tp for c in report.per_experiment.values())
    document = report.as_dict()
    assert document["f1"] == round(report.outliers.f1, 4) and 0 < document["f1"] <= 1
    assert set(document["nab"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert document["nab"] == document["nab_by_window"]["60"] and "30" in document["nab_by_window"]
    # Two labelled changepoints per experiment; the shift's onset is found in every one.
    counts = document["nab_counts"]["standard"]
    assert counts["tp"] + counts["fn"] == 2 * len(experiments) and counts["tp"] >= len(experiments)
    assert document["nab"]["standard"] > 0


def test_cli_trains_on_the_training_rows_scores_and_writes_json(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    write_corpus(tmp_path / "corpus")
    out_json = tmp_path / "result.json"
    code = main(["evaluate", "skab", "--data", str(tmp_path / "corpus"), "--epochs", "1", "--units", "4",
                 "--window", "16", "--stride", "8", "--method", "zscore", "--out", str(tmp_path / "bundle"),
                 "--json", str(out_json)])
    assert code == 0
    document = json.loads(out_json.read_text())
    for key in ("f1", "far", "mar", "nab", "experiments", "model_version", "method", "readings", "seconds"):
        assert key in document
    assert set(document["experiments"]) == {"other/2", "valve1/0", "valve1/1", "valve1/10"}
    assert document["readings"] == 4 * ROWS and document["method"] == "zscore"
    bundle = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert document["model_version"] == bundle["version"]
    printed = capsys.readouterr().out
    assert "* streamer_lstm_stateful_zscore" in printed and "Conv-AE" in printed and "MSCRED" in printed


def test_cli_refuses_a_folder_without_experiments(tmp_path: Path) -> None:
    assert main(["evaluate", "skab", "--data", str(tmp_path), "--bundle", "default"]) == 2
