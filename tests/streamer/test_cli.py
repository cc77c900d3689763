"""The command line: every subcommand is listed and has --help; bad config exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.cli import main

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
