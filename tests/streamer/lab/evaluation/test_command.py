"""The ``evaluate`` training options: CLI parsing and defaults per corpus."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from streamer.lab.evaluation.command import add_evaluate_parser
from streamer.lab.evaluation.recipe import TrainingOptions, train_bundle


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_evaluate_parser(parser.add_subparsers(), argparse.ArgumentParser(add_help=False))
    return parser.parse_args(argv)


@pytest.mark.parametrize("argv", [["evaluate", "nab", "--data", "d", "--out", "o"],
                                  ["evaluate", "telemanom", "--data", "d", "--labels", "l"],
                                  ["evaluate", "skab", "--data", "d"]])
def test_every_corpus_trains_with_one_recipe_by_default(argv: list[str]) -> None:
    assert TrainingOptions.from_args(parse(argv)) == TrainingOptions(epochs=20, stride=2)


def test_every_training_option_reaches_the_options() -> None:
    args = parse(["evaluate", "nab", "--data", "d", "--out", "o", "--epochs", "3", "--seed", "5",
                  "--window", "64", "--stride", "1", "--units", "16", "--layers", "2",
                  "--max-sequences", "1000", "--learning-rate", "0.01"])
    assert TrainingOptions.from_args(args) == TrainingOptions(
        epochs=3, seed=5, window=64, stride=1, units=16, layers=2, max_sequences=1000, learning_rate=0.01)


@pytest.mark.parametrize(("units", "layers"), [(4, 1), (3, 2)])
def test_train_bundle_builds_the_requested_network(tmp_path: Path, units: int, layers: int) -> None:
    from models.bundle import load_bundle

    t = np.arange(300, dtype=np.float64)
    series = {"a": np.sin(t / 5)[:, None], "b": np.cos(t / 7)[:, None]}
    options = TrainingOptions(epochs=1, window=16, stride=4, units=units, layers=layers)
    out = train_bundle(series, tmp_path / "bundle", channels=("value",), options=options, description="test")
    metadata = load_bundle(out).metadata
    assert (metadata.architecture.units, metadata.architecture.layers) == (units, layers)
    assert metadata.window == 16
    assert metadata.training["stride"] == 4
