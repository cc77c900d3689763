"""`streamer evaluate suite` on tiny synthetic corpora in the NAB, SKAB and telemanom layouts."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from rich.console import Console

from streamer.cli import main
from streamer.config import Config
from streamer.lab.evaluation.command import add_evaluate_parser
from streamer.lab.evaluation.recipe import TrainingOptions
from streamer.lab.evaluation.suite import discover, run_suite
from streamer.lab.evaluation.suite_corpora import CorpusSpec, SeedRun
from streamer.lab.evaluation.suite_report import CorpusResult, aggregate, scoreboard, spread
from tests.streamer.lab.evaluation.test_nab import make_corpus as write_nab
from tests.streamer.lab.evaluation.test_skab import write_corpus as write_skab
from tests.streamer.lab.evaluation.test_telemanom import write_corpus as write_telemanom


@dataclasses.dataclass
class UntrainedBundles:
    """A trainer for the suite that saves an untrained tiny forecaster per call (no fitting)."""

    calls: list[tuple[str, TrainingOptions]] = dataclasses.field(default_factory=list)

    def __call__(self, series: Mapping[str, npt.NDArray[np.float64]], out: Path, *, channels: tuple[str, ...],
                 options: TrainingOptions, description: str) -> Path:
        from models.architecture import ArchitectureSpec, build_forecaster
        from models.bundle import BundleMetadata, save_bundle
        from models.normalization import NormalizationSpec

        self.calls.append((description, options))
        spec = ArchitectureSpec(channels=len(channels), units=4)
        save_bundle(out, build_forecaster(spec, seed=options.seed),
                    BundleMetadata(architecture=spec, normalization=NormalizationSpec(), window=8,
                                   min_context=2, channels=channels))
        return out


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_evaluate_parser(parser.add_subparsers(), argparse.ArgumentParser(add_help=False))
    return parser.parse_args(["evaluate", "suite", *argv])


@pytest.fixture
def datasets(tmp_path: Path) -> Path:
    """nab/, skab/ and msl/ as the shared datasets folder holds them, and a stray folder."""
    root = tmp_path / "datasets"
    write_nab(root / "nab")
    write_skab(root / "skab")
    write_telemanom(root / "msl")
    (root / "notes").mkdir()
    return root


def test_discover_finds_every_layout_and_adds_held_out_corpora(datasets: Path, tmp_path: Path) -> None:
    write_telemanom(tmp_path / "held-out" / "smap")
    found, skipped = discover(datasets, [tmp_path / "held-out" / "smap"])
    assert [(spec.name, spec.layout) for spec in found] == [
        ("nab", "nab"), ("skab", "skab"), ("msl", "telemanom"), ("smap", "telemanom")]
    assert found[3].path == tmp_path / "held-out" / "smap"
    assert skipped == []


def test_discover_skips_what_is_missing_and_keeps_only_named_corpora(datasets: Path, tmp_path: Path) -> None:
    (datasets / "skab" / "valve1" / "0.csv").unlink()
    (datasets / "skab" / "valve1" / "1.csv").unlink()
    (datasets / "skab" / "valve1" / "10.csv").unlink()
    (datasets / "skab" / "other" / "2.csv").unlink()
    found, skipped = discover(datasets, [tmp_path / "nowhere"])
    assert [spec.name for spec in found] == ["nab", "msl"]
    assert [item["name"] for item in skipped] == ["skab", "nowhere"]
    found, skipped = discover(datasets, names=["msl", "smap"])
    assert [spec.name for spec in found] == ["msl"]
    assert [item["name"] for item in skipped] == ["smap"]


def test_discover_refuses_two_corpora_with_one_name(datasets: Path) -> None:
    with pytest.raises(ValueError, match="two corpora named msl"):
        discover(datasets, [datasets / "msl"])


def test_cli_without_any_corpus_exits_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out_json = tmp_path / "suite.json"
    assert main(["evaluate", "suite", "--datasets", str(tmp_path / "empty"), "--json", str(out_json)]) == 2
    assert main(["evaluate", "suite", "--datasets", str(tmp_path / "missing"), "--json", str(out_json)]) == 2
    assert not out_json.exists()


def test_a_bad_corpus_is_refused_before_any_training(datasets: Path, tmp_path: Path) -> None:
    (datasets / "msl" / "test" / "M-1.npy").unlink()
    trainer = UntrainedBundles()
    args = parse(["--datasets", str(datasets), "--json", str(tmp_path / "suite.json"),
                  "--out", str(tmp_path / "out")])
    assert run_suite(args, Config(), trainer) == 2
    assert trainer.calls == []


def test_suite_runs_every_corpus_once_per_seed_with_one_configuration(
        datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trainer = UntrainedBundles()
    out_json = tmp_path / "suite.json"
    args = parse(["--datasets", str(datasets), "--json", str(out_json), "--seeds", "7", "8",
                  "--out", str(tmp_path / "out")])
    assert run_suite(args, Config(), trainer) == 0

    # Each corpus trained with the evaluate commands' recipe, once per seed.
    assert [options for _, options in trainer.calls] == [
        TrainingOptions(seed=seed) for _corpus in ("nab", "skab", "msl") for seed in (7, 8)]
    assert "NAB probationary" in trainer.calls[0][0] and "SKAB" in trainer.calls[2][0]

    document = json.loads(out_json.read_text())
    assert document["complete"] is True and document["seeds"] == [7, 8]
    assert document["skipped"] == [] and document["fleet"] is None
    assert list(document["corpora"]) == ["nab", "skab", "msl"]
    config = document["config"]
    assert config["digest"].startswith("sha256:") and config["thresholds"]["method"] == "zscore"
    assert set(config) >= {"thresholds", "alerts", "predictor"}

    headline = {"nab": {"standard", "reward_low_FP_rate", "reward_low_FN_rate"},
                "skab": {"f1", "far", "mar", "nab_standard", "nab_reward_low_FP_rate",
                         "nab_reward_low_FN_rate"},
                "msl": {"precision", "recall", "f1", "alerted_fraction"}}
    for name, corpus in document["corpora"].items():
        assert set(corpus["metrics"]) == headline[name]
        assert [run["seed"] for run in corpus["runs"]] == [7, 8]
        assert corpus["model_versions"] == [run["result"]["model_version"] for run in corpus["runs"]]
        assert len(set(corpus["model_versions"])) == 2  # each seed its own bundle
        assert all(run["result"]["method"] == "zscore" for run in corpus["runs"])  # no per-corpus override
        for metric, figures in corpus["metrics"].items():
            values = [run["metrics"][metric] for run in corpus["runs"]]
            assert figures["by_seed"] == {"7": values[0], "8": values[1]}
            assert figures["mean"] == pytest.approx(sum(values) / 2, abs=1e-4)
            assert (figures["min"], figures["max"]) == (min(values), max(values))
        assert corpus["seconds"] >= 0
    msl = document["corpora"]["msl"]
    assert msl["metrics"]["recall"]["by_seed"]["7"] == msl["runs"][0]["result"]["recall"]
    assert set(msl["spacecraft"]) == {"MSL", "SMAP"}
    assert set(msl["spacecraft"]["MSL"]) == {"precision", "recall", "f1"}
    assert 0 <= msl["runs"][0]["metrics"]["alerted_fraction"] <= 1
    assert document["corpora"]["nab"]["published"]["standard"] == [
        {"detector": "ARTime", "value": 74.85}, {"detector": "Numenta HTM", "value": 70.1}]
    assert document["corpora"]["skab"]["published"]["f1"] == [{"detector": "Conv-AE", "value": 0.78}]
    assert (tmp_path / "out" / "nab" / "seed-8" / "results").is_dir()

    printed = capsys.readouterr().out
    for text in ("ARTime 74.85", "Conv-AE 0.780", "MSCRED 32.42", "share of test rows alerted"):
        assert text in printed


def _run(seed: int, **metrics: float) -> SeedRun:
    return SeedRun(seed, metrics, {}, f"lstm-{seed}", 1.0, 2.0, {})


def test_aggregation_over_seeds_and_the_table() -> None:
    assert spread({7: 70.0, 8: 64.0, 9: 61.0}).mean == pytest.approx(65.0)
    runs = [_run(7, standard=70.0, reward_low_FP_rate=-3.0), _run(8, standard=64.0, reward_low_FP_rate=-1.0),
            _run(9, standard=61.0, reward_low_FP_rate=-2.0)]
    by_seed = aggregate({run.seed: run.metrics for run in runs})
    assert (by_seed["standard"].mean, by_seed["standard"].low, by_seed["standard"].high) == (65.0, 61.0, 70.0)
    assert by_seed["standard"].as_dict()["by_seed"] == {"7": 70.0, "8": 64.0, "9": 61.0}
    result = CorpusResult(CorpusSpec("nab", "nab", Path("nab")), runs, 6.0)
    fleet = {"seconds": 30.0, "detection_rate": {"spike": 0.9, "drift": 0.5}, "false_alerts": 3}
    console = Console(record=True, width=200)
    console.print(scoreboard([result], [7, 8, 9], fleet))
    text = console.export_text()
    assert "65.00 [61.00–70.00]" in text and "-2.00 [-3.00–-1.00]" in text  # noqa: RUF001  # the table's dash
    assert "ARTime 74.85, Numenta HTM 70.10" in text
    assert "detection rate drift" in text and "false alerts" in text
