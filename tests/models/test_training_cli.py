"""`streamer train` and `streamer model inspect` end to end through streamer.cli.main."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamer.cli import main


def _csv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = ["timestamp,device_id,value"]
    for device in ("pump-1", "pump-2"):
        for t in range(160):
            value = 20.0 + 2.0 * np.sin(t / 6.0) + rng.normal(0.0, 0.2)
            rows.append(f"{1_700_000_000_000 + 100 * t},{device},{value:.4f}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


TINY = ["--window", "16", "--min-context", "4", "--units", "4", "--epochs", "1", "--batch-size", "32",
        "--max-sequences", "64", "--val-fraction", "0.25", "--quiet"]


def test_train_writes_a_bundle_and_inspect_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _csv(tmp_path / "readings.csv")
    out = tmp_path / "bundle"
    argv = ["train", "--data", str(data), "--out", str(out), *TINY]
    assert main(argv) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["window"] == 16
    assert trained["channels"] == ["value"]
    assert trained["training"]["devices"] == 2
    assert trained["training"]["command"] == "streamer " + " ".join(argv)
    assert {"mse", "naive_mse"} <= trained["validation"].keys()
    assert (out / "model.keras").is_file()
    assert (out / "weights.npz").is_file()

    assert main(["model", "inspect", str(out)]) == 0
    inspected = json.loads(capsys.readouterr().out)
    assert inspected["version"] == trained["version"]
    assert inspected["version"].startswith("lstm-")
    assert inspected["architecture"]["units"] == 4


def test_train_on_unreadable_data_exits_2_naming_the_problem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "readings.csv"
    bad.write_text("time,value\n1,2\n", encoding="utf-8")
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "b"), *TINY]) == 2
    assert "no 'timestamp' column" in caplog.text
    assert not (tmp_path / "b").exists()


def test_inspect_of_a_missing_bundle_exits_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert main(["model", "inspect", str(tmp_path / "nowhere")]) == 2
    assert "cannot load bundle" in caplog.text


def test_train_needs_exactly_one_data_source(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--out", "x"])
    assert exit_info.value.code == 2
    assert "--data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--synthetic", "--data", "a.csv", "--out", "x"])


def test_model_without_a_subcommand_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model"]) == 2
    assert "inspect" in capsys.readouterr().out


def test_the_cli_and_training_commands_import_no_tensorflow() -> None:
    # A fresh interpreter: this test session has imported TensorFlow already.
    code = ("import sys, streamer.cli, streamer.training_cli, streamer.training_data; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_train_on_the_synthetic_fleet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bundle"
    assert main(["train", "--synthetic", "--devices", "3", "--steps", "150", "--out", str(out), *TINY]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["training"]["devices"] == 3
    assert described["training"]["steps"] == 450
    assert described["training"]["data"].startswith("synthetic fleet: 3 devices x 150 steps")


@pytest.mark.parametrize("argv", [["train"], ["model", "inspect"]])
def test_each_training_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    assert f"streamer {' '.join(argv)}" in capsys.readouterr().out


def test_the_shipped_default_bundle_loads_and_beats_persistence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "inspect", "default"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["version"].startswith("lstm-")
    assert described["training"]["command"].startswith("streamer train --synthetic")
    validation = described["validation"]
    assert validation["mse"] < validation["naive_mse"]
    assert validation["mae"] < validation["naive_mae"]


def test_the_makefile_trains_the_default_bundle_with_the_recorded_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    makefile = (Path(__file__).parents[2] / "Makefile").read_text(encoding="utf-8").splitlines()
    recipe = makefile[makefile.index("bundle: setup") + 1].strip()
    assert main(["model", "inspect", "default"]) == 0
    recorded = json.loads(capsys.readouterr().out)["training"]["command"]
    assert recipe == recorded.replace("streamer ", "$(BIN)/streamer ", 1)
