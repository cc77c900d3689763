"""The command line: every subcommand is listed and has --help; bad config exits 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.bundle import default_bundle_path
from models.registry import BundleRegistry
from streamer.cli import main
from tests.bundle_variants import bundle_variant, damage_weights

SUBCOMMANDS = ("run", "simulate", "demo", "alertmanager", "train", "model", "export", "bench", "evaluate",
               "chaos")


def test_top_level_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert f"streamer {name}" in capsys.readouterr().out


def test_invalid_config_fails_at_start_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("thresholds:\n  zscore:\n    window: 4\n")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: thresholds.zscore.window" in err
    assert "got 4" in err


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: streamer" in capsys.readouterr().out


def _damaged_bundles(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Bundle directories damaged in each way an operator may meet, with the reason expected."""
    shipped = default_bundle_path()
    out: dict[str, tuple[Path, str]] = {"missing": (tmp_path / "nowhere", "no such directory")}
    empty = tmp_path / "empty"
    empty.mkdir()
    out["no bundle.json"] = (empty, "no bundle.json: not a model bundle")
    truncated = tmp_path / "truncated"
    shutil.copytree(shipped, truncated)
    text = (truncated / "bundle.json").read_text(encoding="utf-8")
    (truncated / "bundle.json").write_text(text[: len(text) // 2], encoding="utf-8")
    out["truncated bundle.json"] = (truncated, "bundle.json is not valid JSON")
    edited = tmp_path / "edited"
    shutil.copytree(shipped, edited)
    weights = bytearray((edited / "weights.npz").read_bytes())
    weights[len(weights) // 2] ^= 0xFF
    (edited / "weights.npz").write_bytes(bytes(weights))
    out["corrupt weights"] = (edited, "content does not match its version")
    return out


@pytest.mark.parametrize("damage", ["missing", "no bundle.json", "truncated bundle.json", "corrupt weights"])
def test_a_damaged_bundle_stops_run_with_one_line_naming_key_path_and_reason(
        tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    bundle, reason = _damaged_bundles(tmp_path)[damage]
    config = tmp_path / "config.yaml"
    config.write_text(f"predictor:\n  lstm:\n    bundle: {bundle}\n", encoding="utf-8")
    assert main(["run", "--config", str(config)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"streamer: {config}: predictor.lstm.bundle: {bundle}: ")
    assert reason in line


def test_a_missing_registry_or_a_damaged_current_stops_run_with_one_line_naming_the_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    registry = tmp_path / "registry"
    config.write_text(f"predictor:\n  lstm:\n    registry: {registry}\n", encoding="utf-8")
    assert main(["run", "--config", str(config)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"streamer: {config}: predictor.lstm.registry: {registry}: no such directory "
                    "(create it with: streamer model add BUNDLE --promote)")
    version = BundleRegistry(registry).add(bundle_variant(tmp_path / "bundle", 1)[0])
    BundleRegistry(registry).promote(version)
    damage_weights(registry / "versions" / version)
    assert main(["run", "--config", str(config)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"streamer: {config}: predictor.lstm.registry: {registry}: current {version}: "
                           "unreadable: content does not match its version")


def test_a_bundle_of_other_channels_stops_run_with_exit_code_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("readings:\n  channels: [temp, vibration]\n", encoding="utf-8")
    assert main(["run", "--config", str(config)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"streamer: {config}: predictor.lstm.bundle: default: bundle channels ['value']")
