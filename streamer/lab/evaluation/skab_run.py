"""``streamer evaluate skab``: SKAB's 34 experiments through the production path, scored as SKAB scores them.

1. Unless ``--bundle`` names one, one forecaster for all eight sensors is
   trained on the first 400 rows of every experiment: SKAB's training split,
   and nothing of any test part. (SKAB's baselines instead fit one model per
   experiment; a daemon serves a fleet with one model and per-device
   normalisation, so this is the setting that measures it.) The normal run in
   ``anomaly-free/`` is not used, to keep to the published split.
2. Every experiment, training rows then test rows, is replayed as one fleet
   through :func:`streamer.lab.evaluation.replay.replay`.
3. Test rows inside alert episodes are the binary prediction that
   :mod:`streamer.lab.evaluation.skab_scoring` scores.
4. With ``--operator DELAY`` the experiments are replayed a second time with
   the same bundle and a simulated operator (:mod:`streamer.lab.evaluation.operator`)
   answering from the anomaly labels. Figures as SKAB counts them, test rows
   pooled over experiments: precision ``TP / (TP + FP)``, recall
   ``TP / (TP + FN)``, F1 (SKAB's, the same harmonic mean), false positives
   = rows predicted anomalous outside a labelled anomaly; ``events`` adds the
   episode-level counts (:func:`streamer.lab.evaluation.skab.episode_counts`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.config import Config
from streamer.json_output import write_json
from streamer.lab.evaluation import skab, skab_scoring
from streamer.lab.evaluation.nab_run import detector_name
from streamer.lab.evaluation.operator import comparison, format_comparison, summary
from streamer.lab.evaluation.recipe import BAD_INPUT, TrainingOptions, configured, train_bundle

log = logging.getLogger("streamer.evaluate")



def training_description(root: Path) -> str:
    """What a forecaster trained on :func:`skab.training_series` learnt from, for its bundle."""
    return f"first {skab.TRAIN_ROWS} rows of every SKAB experiment in {root}"


@dataclass(frozen=True)
class SkabOutcome:
    """One replay of the experiments, scored as SKAB scores it."""

    detector: str
    mode: str
    report: skab.SkabReport
    experiment_count: int
    operator: dict[str, Any] | None = None  # the comparison with a simulated operator, when run

    def document(self, *, train_seconds: float, seconds: float) -> dict[str, Any]:
        """The JSON document ``streamer evaluate skab --json`` writes."""
        document = {"detector": self.detector, "mode": self.mode, **self.report.as_dict(),
                    "experiment_count": self.experiment_count, "train_seconds": round(train_seconds, 1),
                    "seconds": round(seconds, 1)}
        if self.operator is not None:
            document["operator"] = self.operator
        return document


def evaluate_experiments(config: Config, experiments: Sequence[skab.Experiment], *, bundle: Path, method: str,
                         mode: str, range_margin: float | None = None,
                         window_seconds: int = skab.DEFAULT_WINDOW_SECONDS,
                         operator_delay: int | None = None) -> SkabOutcome:
    """Replay ``experiments`` with ``bundle`` under ``config`` and score them.

    Args:
        config: The daemon configuration (its thresholds and alerts sections apply).
        experiments: From :func:`skab.read_corpus`.
        bundle: The forecaster bundle for the eight sensors (a folder, or ``default``).
        method: Threshold method.
        mode: Predictor mode.
        range_margin: Range novelty margin; None keeps the config's.
        window_seconds: Changepoint window to the right of each labelled changepoint.
        operator_delay: Also replay with a simulated operator answering after
            this many readings (see the module docstring, step 4).
    """
    evaluated = configured(config, method=method, mode=mode, bundle=bundle, channels=skab.SENSORS,
                           range_margin=range_margin)
    report = skab.evaluate(evaluated, experiments, window_seconds=window_seconds)
    operator = None
    if operator_delay is not None:
        answered = skab.evaluate(evaluated, experiments, window_seconds=window_seconds,
                                 operator_delay=operator_delay)
        operator = comparison(operator_delay, _figures(report, experiments), _figures(answered, experiments),
                              feedback=answered.replay.feedback)
    return SkabOutcome(detector_name(mode, method), mode, report, len(experiments), operator)


def _figures(report: skab.SkabReport, experiments: Sequence[skab.Experiment]) -> dict[str, Any]:
    """One run's row-level figures for the ``operator`` section, with its episode-level counts."""
    rows, episodes = report.outliers, skab.episode_counts(experiments, report.replay.alerts)
    return summary(tp=rows.tp, fp=rows.fp, fn=rows.fn, far=round(rows.far, 4), nab=report.nab(),
                   events=summary(tp=episodes.tp, fp=episodes.fp, fn=episodes.fn))


def run_skab(args: argparse.Namespace, config: Config) -> int:
    """Train (unless given a bundle), replay, score, write JSON and print the tables."""
    started = time.monotonic()
    if args.window_seconds <= 0:
        log.error("--window-seconds must be positive, got %d", args.window_seconds)
        return BAD_INPUT
    if args.operator is not None and args.operator < 1:
        log.error("--operator must be at least 1 reading, got %d", args.operator)
        return BAD_INPUT
    try:
        experiments = skab.read_corpus(args.data)
    except (OSError, ValueError) as exc:
        log.error("cannot read the SKAB corpus: %s", exc)  # noqa: TRY400  # the message names the file
        return BAD_INPUT

    bundle = args.bundle
    train_seconds = 0.0
    if bundle is None:
        train_started = time.monotonic()
        bundle = train_bundle(skab.training_series(experiments), args.out or Path("skab-bundle"),
                              channels=skab.SENSORS, options=TrainingOptions.from_args(args),
                              description=training_description(args.data))
        train_seconds = time.monotonic() - train_started
    outcome = evaluate_experiments(config, experiments, bundle=bundle,
                                   method=args.method or config.thresholds.method,
                                   mode=args.mode or config.predictor.lstm.mode,
                                   range_margin=args.range_margin, window_seconds=args.window_seconds,
                                   operator_delay=args.operator)
    if args.json is not None:
        write_json(args.json, outcome.document(train_seconds=train_seconds,
                                               seconds=time.monotonic() - started))
        log.info("results written to %s", args.json)

    report, detector = outcome.report, outcome.detector
    lines = ["outlier detection (test rows of every experiment pooled):",
             skab_scoring.format_outlier_table({detector: report.outliers}), ""]
    for width in sorted(report.changepoints):  # the published widths and --window-seconds
        lines += [f"changepoint detection, NAB variant, {width} s window to the right:",
                  skab_scoring.format_changepoint_table({detector: report.nab(width)}, width), ""]
    if outcome.operator is not None:
        lines += [format_comparison(outcome.operator, "test rows"), ""]
    sys.stdout.write("\n".join(lines))  # the command's output
    return 0
