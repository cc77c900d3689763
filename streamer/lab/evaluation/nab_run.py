"""``streamer evaluate nab``: the NAB corpus through the production path, scored as NAB scores it.

1. One forecaster is trained on the probationary part of every series (the
   first 15 %, at most 750 rows: NAB lets a detector learn from it), unless
   ``--bundle`` names one. The NAB defaults (``--stride 2 --epochs 20``,
   early stopping) were chosen by the held-out forecast error, not by the
   benchmark score: with stride 8 and 10 epochs the best epoch was always
   the last (validation MSE 0.61-0.63 of persistence's); stride 2 trains to
   convergence (0.54-0.55, about 20 s). On NAB the residual-only score
   gains about 4 points (likelihood 25.1 vs 21.1, mean of two seeds) and the
   default product score (with range novelty) is unchanged within seed noise
   (about +-2 points). Wider or deeper networks, window 64, other
   normalisation spans and window mode all scored within that noise.
2. All 58 series are replayed together as one fleet through
   :func:`streamer.lab.evaluation.replay.replay`, once per threshold method.
3. Each method's scores are written in NAB's results layout
   (``<out>/results/<detector>/<category>/<detector>_<name>.csv``) so other
   tools can score them, then scored with :mod:`streamer.lab.evaluation.nab_scoring`.
4. With ``--operator DELAY`` each method is replayed a second time with the
   same bundle and a simulated operator (:mod:`streamer.lab.evaluation.operator`)
   that answers from the windows. NAB's own score ranks rows by anomaly score
   and has no notion of an alert, so the comparison is made at the window
   level, on alert episodes (:func:`window_counts`): a window overlapped by an
   episode is a true positive, a window no episode overlaps a false negative,
   an episode after the probationary period that overlaps no window a false
   positive; precision, recall and F1 follow. The operator run's NAB scores
   are reported beside them (its results layout is not written).
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

import numpy as np
import numpy.typing as npt

from streamer.codec import Alert
from streamer.config import Config
from streamer.json_output import write_json
from streamer.lab.evaluation import nab, nab_scoring
from streamer.lab.evaluation.events import EventCounts, clip_spans, count_events, episode_spans, total
from streamer.lab.evaluation.operator import Operator, comparison, format_comparison, summary
from streamer.lab.evaluation.recipe import BAD_INPUT, TrainingOptions, configured, train_bundle
from streamer.lab.evaluation.replay import ReplayResult, Series, replay

log = logging.getLogger("streamer.evaluate")

Float64Array = npt.NDArray[np.float64]


def detector_name(mode: str, method: str) -> str:
    """Folder name of one configuration in the results layout.

    >>> detector_name("stateful", "likelihood")
    'streamer_lstm_stateful_likelihood'
    """
    return f"streamer_lstm_{mode}_{method}"


@dataclass(frozen=True)
class NabCorpus:
    """A NAB corpus read and checked: every series and its labelled windows."""

    root: Path
    series: list[nab.NabSeries]
    windows: dict[str, list[nab.Window]]

    def training_series(self) -> dict[str, Float64Array]:
        """The probationary part of every series (what NAB lets a detector learn from)."""
        return {item.key: item.values[: nab.probationary_length(len(item))][:, None] for item in self.series}

    @property
    def description(self) -> str:
        """What a forecaster trained on :meth:`training_series` learnt from, for its bundle."""
        return f"NAB probationary periods of {self.root}"


def read_corpus(root: Path) -> NabCorpus:
    """Read every series and the windows file under ``root``.

    Raises:
        OSError: A file cannot be read.
        ValueError: A malformed file, or a series without an entry in the windows file.
    """
    keys = nab.list_series(root)
    windows = nab.read_windows(root)
    series = [nab.read_series(root, key) for key in keys]
    missing = [key for key in keys if key not in windows]
    if missing:
        raise ValueError(f"series without an entry in the windows file: {', '.join(missing)}")
    return NabCorpus(root, series, windows)


@dataclass(frozen=True)
class NabOutcome:
    """Every threshold method's replay of one corpus, scored."""

    scores: dict[str, nab_scoring.CorpusScore]  # by detector name
    detectors: list[dict[str, Any]]  # one JSON document per method, in the order run
    results_dir: Path

    def document(self, seconds: float) -> dict[str, Any]:
        """The JSON document ``streamer evaluate nab --json`` writes: the best method's figures first."""
        best = max(self.detectors, key=lambda d: float(d["scores"]["standard"]))
        return {**best, "seconds": round(seconds, 1), "results": str(self.results_dir),
                "detectors": self.detectors}


def window_counts(corpus: NabCorpus, alerts: Sequence[Alert]) -> EventCounts:
    """Window-level counts of alert episodes (see the module docstring, step 4)."""
    spans = episode_spans(alerts, {item.key: item.timestamps for item in corpus.series})
    counts = []
    for item in corpus.series:
        n = len(item)
        probationary = nab.probationary_length(n)
        detected = clip_spans(spans.get(item.key, []), probationary, n - 1)
        # The windows NAB scores: those with a row past the probationary period.
        rows = nab.window_rows(item.timestamps, corpus.windows[item.key])
        windows = [window for window in rows if window[1] >= probationary]
        counts.append(count_events(windows, detected))
    return total(counts)


def _scored_files(corpus: NabCorpus, replayed: ReplayResult) -> list[nab_scoring.ScoredFile]:
    # Rows without a score (warm-up, rejected) count as "not anomalous".
    return [nab_scoring.ScoredFile.from_timestamps(item.key, item.timestamps, np.nan_to_num(scores, nan=0.0),
                                                   corpus.windows[item.key])
            for item, scores in zip(corpus.series, replayed.scores, strict=True)]


def _with_operator(config: Config, corpus: NabCorpus, series: Sequence[Series], without: ReplayResult,
                   without_score: nab_scoring.CorpusScore, delay: int) -> dict[str, Any]:
    """The ``operator`` section of one method's document: replay again with the operator, compare."""
    labels = {item.key: nab.window_rows(item.timestamps, corpus.windows[item.key]) for item in corpus.series}
    answered = replay(config, series, feedback=Operator(series, labels, delay))
    answered_score = nab_scoring.score_corpus(_scored_files(corpus, answered))
    figures = []
    for replayed, score in ((without, without_score), (answered, answered_score)):
        counts = window_counts(corpus, replayed.alerts)
        normalised = {profile.profile.name: round(profile.normalised, 2) for profile in score}
        figures.append(summary(tp=counts.tp, fp=counts.fp, fn=counts.fn, scores=normalised))
    return comparison(delay, figures[0], figures[1], feedback=answered.feedback)


def evaluate_corpus(config: Config, corpus: NabCorpus, out: Path, *, bundle: Path,
                    methods: Sequence[str], mode: str, range_margin: float | None = None,
                    operator_delay: int | None = None) -> NabOutcome:
    """Replay ``corpus`` once per threshold method, write NAB's results layout under ``out`` and score it.

    Args:
        config: The daemon configuration (its thresholds and alerts sections apply).
        corpus: From :func:`read_corpus`.
        out: Results root (writes ``out/results/<detector>/...``).
        bundle: The forecaster bundle (a folder, or ``default``).
        methods: Threshold methods to replay with.
        mode: Predictor mode.
        range_margin: Range novelty margin; None keeps the config's.
        operator_delay: Also replay with a simulated operator answering after
            this many readings; each method's document gets an ``operator``
            section (see the module docstring, step 4).
    """
    series = [Series(item.key, item.timestamps, item.values[:, None]) for item in corpus.series]
    windows = corpus.windows
    scores: dict[str, nab_scoring.CorpusScore] = {}
    documents: list[dict[str, Any]] = []
    for method in methods:
        detector = detector_name(mode, method)
        evaluated = configured(config, method=method, mode=mode, bundle=bundle, channels=("value",),
                               range_margin=range_margin)
        replayed = replay(evaluated, series)
        files = _scored_files(corpus, replayed)
        for item, scored in zip(corpus.series, files, strict=True):
            nab.write_results(out / "results", detector, item, scored.scores,
                              nab.window_labels(item.timestamps, windows[item.key]))
        score = nab_scoring.score_corpus(files)
        scores[detector] = score
        documents.append({
            "detector": detector,
            "method": method,
            "mode": mode,
            "model_version": replayed.model_version,
            "scores": {profile.profile.name: round(profile.normalised, 2) for profile in score},
            # +inf (never firing scores best) is not valid JSON: null.
            "thresholds": {profile.profile.name: profile.threshold if np.isfinite(profile.threshold) else None
                           for profile in score},
            "counts": {profile.profile.name: {"tp": profile.tp, "fp": profile.fp, "fn": profile.fn}
                       for profile in score},
            "readings": replayed.readings,
            "rejected": dict(replayed.rejected),
            "replay_seconds": round(replayed.seconds, 2),
        })
        log.info("%s: standard %.2f (replay %.1f s)", detector, documents[-1]["scores"]["standard"],
                 replayed.seconds)
        if operator_delay is not None:
            documents[-1]["operator"] = _with_operator(evaluated, corpus, series, replayed, score,
                                                        operator_delay)
    return NabOutcome(scores, documents, out / "results")


def run_nab(args: argparse.Namespace, config: Config) -> int:
    """Train (unless given a bundle), replay, write results, score and print the table."""
    started = time.monotonic()
    if args.operator is not None and args.operator < 1:
        log.error("--operator must be at least 1 reading, got %d", args.operator)
        return BAD_INPUT
    try:
        corpus = read_corpus(args.data)
    except (OSError, ValueError) as exc:
        log.error("cannot read the NAB corpus: %s", exc)  # noqa: TRY400  # the message names the file
        return BAD_INPUT

    out: Path = args.out
    bundle = args.bundle
    if bundle is None:
        bundle = train_bundle(corpus.training_series(), out / "bundle", channels=("value",),
                              options=TrainingOptions.from_args(args),
                              description=corpus.description)
    outcome = evaluate_corpus(config, corpus, out, bundle=bundle,
                              methods=args.methods or [args.method or config.thresholds.method],
                              mode=args.mode or config.predictor.lstm.mode, range_margin=args.range_margin,
                              operator_delay=args.operator)
    if args.json is not None:
        write_json(args.json, outcome.document(time.monotonic() - started))
    sys.stdout.write(nab_scoring.format_scoreboard(outcome.scores) + "\n")  # the command's output
    for detector in outcome.detectors:
        if "operator" in detector:
            sys.stdout.write(format_comparison(detector["operator"], f"{detector['detector']}, windows and "
                                                                     "alert episodes") + "\n")
    return 0
