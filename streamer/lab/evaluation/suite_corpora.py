"""The corpora of ``streamer evaluate suite``: find them, read them, run one training seed of each.

A corpus is a folder in one of three layouts, each run as its own ``evaluate``
command runs it (the same reader, training split and recipe, replay and
scoring; only the seed changes):

- ``nab``: NAB's ``data/`` and ``labels/combined_windows.json``
  (:mod:`streamer.lab.evaluation.nab_run`);
- ``skab``: SKAB's ``<group>/<n>.csv`` experiments (:mod:`streamer.lab.evaluation.skab_run`);
- ``telemanom``: ``train/``, ``test/`` and ``labeled_anomalies.csv``
  (:mod:`streamer.lab.evaluation.telemanom`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from streamer.config import Config
from streamer.lab.evaluation import nab, nab_run, skab, skab_run, telemanom
from streamer.lab.evaluation.recipe import TrainingOptions, configured

log = logging.getLogger("streamer.evaluate")

Layout = Literal["nab", "skab", "telemanom"]
Float64Array = npt.NDArray[np.float64]

TELEMANOM_LABELS = "labeled_anomalies.csv"


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus found on disk: its name in the scoreboard, its layout and its folder."""

    name: str
    layout: Layout
    path: Path


def layout_of(path: Path) -> Layout | None:
    """The layout of the folder ``path``, or None if it holds none of them."""
    if not path.is_dir():
        return None
    if (path / "train").is_dir() and (path / "test").is_dir() and (path / TELEMANOM_LABELS).is_file():
        return "telemanom"
    if (path / nab.DATA_DIR).is_dir() and (path / nab.WINDOWS_FILE).is_file():
        return "nab"
    if any(p.parent.name != skab.ANOMALY_FREE for p in path.glob("*/*.csv")):
        return "skab"
    return None


class Trainer(Protocol):
    """Trains a forecaster and saves it as a bundle (:func:`streamer.lab.evaluation.recipe.train_bundle`)."""

    def __call__(self, series: Mapping[str, Float64Array], out: Path, *, channels: tuple[str, ...],
                 options: TrainingOptions, description: str) -> Path:
        """Train on ``series`` and save the bundle in ``out``; return the bundle folder."""
        ...


@dataclass(frozen=True)
class SeedRun:
    """One training seed of one corpus: its headline figures and the command's whole JSON document."""

    seed: int
    metrics: dict[str, float]
    spacecraft: dict[str, dict[str, float]]  # telemanom only: precision, recall, F1 per spacecraft
    model_version: str
    train_seconds: float
    seconds: float
    document: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """For the suite's JSON document."""
        return {"seed": self.seed, "model_version": self.model_version,
                "train_seconds": round(self.train_seconds, 1), "seconds": round(self.seconds, 1),
                "metrics": self.metrics, "result": self.document}


class LoadedCorpus(Protocol):
    """A corpus read into memory, ready to be run with any seed."""

    @property
    def spec(self) -> CorpusSpec:
        """What was read."""
        ...

    def run(self, config: Config, seed: int, out: Path, trainer: Trainer) -> SeedRun:
        """Train with ``seed`` (files under ``out``), replay with ``config``, score."""
        ...


def load(spec: CorpusSpec) -> LoadedCorpus:
    """Read the corpus ``spec`` names.

    Raises:
        OSError: A file cannot be read.
        ValueError: A malformed file (the message names it).
    """
    if spec.layout == "nab":
        return _Nab(spec, nab_run.read_corpus(spec.path))
    if spec.layout == "skab":
        return _Skab(spec, skab.read_corpus(spec.path))
    return _Telemanom(spec, telemanom.read_corpus(spec.path, spec.path / TELEMANOM_LABELS))


@dataclass(frozen=True)
class _Nab:
    spec: CorpusSpec
    corpus: nab_run.NabCorpus

    def run(self, config: Config, seed: int, out: Path, trainer: Trainer) -> SeedRun:
        started = time.monotonic()
        bundle = trainer(self.corpus.training_series(), out / "bundle", channels=("value",),
                         options=TrainingOptions(seed=seed), description=self.corpus.description)
        trained = time.monotonic()
        outcome = nab_run.evaluate_corpus(config, self.corpus, out, bundle=bundle,
                                          methods=[config.thresholds.method],
                                          mode=config.predictor.lstm.mode)
        document = outcome.document(time.monotonic() - started)
        (score,) = outcome.scores.values()
        metrics = {profile.profile.name: profile.normalised for profile in score}
        return SeedRun(seed, metrics, {}, document["model_version"], trained - started,
                       time.monotonic() - started, document)


@dataclass(frozen=True)
class _Skab:
    spec: CorpusSpec
    experiments: list[skab.Experiment]

    def run(self, config: Config, seed: int, out: Path, trainer: Trainer) -> SeedRun:
        started = time.monotonic()
        bundle = trainer(skab.training_series(self.experiments), out / "bundle", channels=skab.SENSORS,
                         options=TrainingOptions(seed=seed),
                         description=skab_run.training_description(self.spec.path))
        trained = time.monotonic()
        outcome = skab_run.evaluate_experiments(config, self.experiments, bundle=bundle,
                                                method=config.thresholds.method,
                                                mode=config.predictor.lstm.mode)
        document = outcome.document(train_seconds=trained - started, seconds=time.monotonic() - started)
        outliers = outcome.report.outliers
        metrics = {"f1": outliers.f1, "far": outliers.far, "mar": outliers.mar}
        metrics.update({f"nab_{profile}": score for profile, score in outcome.report.nab().items()})
        return SeedRun(seed, metrics, {}, document["model_version"], trained - started,
                       time.monotonic() - started, document)


_EVENT_METRICS = ("precision", "recall", "f1")


@dataclass(frozen=True)
class _Telemanom:
    spec: CorpusSpec
    channels: list[telemanom.Channel]

    def run(self, config: Config, seed: int, out: Path, trainer: Trainer) -> SeedRun:
        started = time.monotonic()
        bundle = trainer(telemanom.training_series(self.channels), out / "bundle", channels=("value",),
                         options=TrainingOptions(seed=seed),
                         description=telemanom.training_description(self.spec.path))
        trained = time.monotonic()
        report = telemanom.evaluate(configured(config, method=None, mode=None, bundle=bundle,
                                               channels=("value",)), self.channels)
        document = report.as_dict()
        metrics = {name: float(getattr(report.total, name)) for name in _EVENT_METRICS}
        metrics["alerted_fraction"] = report.alerted_fraction
        crafts = {craft: {name: float(getattr(counts, name)) for name in _EVENT_METRICS}
                  for craft, counts in sorted(report.spacecraft.items())}
        return SeedRun(seed, metrics, crafts, document["model_version"], trained - started,
                       time.monotonic() - started, document)

