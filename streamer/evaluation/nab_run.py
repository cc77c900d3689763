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
   :func:`streamer.evaluation.replay.replay`, once per threshold method.
3. Each method's scores are written in NAB's results layout
   (``<out>/results/<detector>/<category>/<detector>_<name>.csv``) so other
   tools can score them, then scored with :mod:`streamer.evaluation.nab_scoring`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamer.config import Config
from streamer.evaluation import nab, nab_scoring
from streamer.evaluation.command import BAD_INPUT, NAB_TRAINING, TrainingOptions, configured, train_bundle
from streamer.evaluation.replay import Series, replay
from streamer.json_output import write_json

log = logging.getLogger("streamer.evaluate")


def detector_name(mode: str, method: str) -> str:
    """Folder name of one configuration in the results layout.

    >>> detector_name("stateful", "likelihood")
    'streamer_lstm_stateful_likelihood'
    """
    return f"streamer_lstm_{mode}_{method}"


def run_nab(args: argparse.Namespace, config: Config) -> int:
    """Train (unless given a bundle), replay, write results, score and print the table."""
    started = time.monotonic()
    try:
        keys = nab.list_series(args.data)
        windows = nab.read_windows(args.data)
        corpus = [nab.read_series(args.data, key) for key in keys]
    except (OSError, ValueError) as exc:
        log.error("cannot read the NAB corpus: %s", exc)  # noqa: TRY400  # the message names the file
        return BAD_INPUT
    missing = [key for key in keys if key not in windows]
    if missing:
        log.error("series without an entry in the windows file: %s", ", ".join(missing))
        return BAD_INPUT

    out: Path = args.out
    bundle = args.bundle
    if bundle is None:
        probation = {item.key: item.values[: nab.probationary_length(len(item))][:, None] for item in corpus}
        bundle = train_bundle(probation, out / "bundle", channels=("value",),
                              options=TrainingOptions.from_args(args, NAB_TRAINING),
                              description=f"NAB probationary periods of {args.data}")
    methods = args.methods or [args.method or config.thresholds.method]
    mode = args.mode or config.predictor.lstm.mode
    series = [Series(item.key, item.timestamps, item.values[:, None]) for item in corpus]

    results: dict[str, nab_scoring.CorpusScore] = {}
    documents: list[dict[str, Any]] = []
    for method in methods:
        detector = detector_name(mode, method)
        replayed = replay(configured(config, method=method, mode=mode, bundle=bundle, channels=("value",),
                                     range_margin=args.range_margin),
                          series)
        files = []
        for item, scores in zip(corpus, replayed.scores, strict=True):
            # Rows without a score (warm-up, rejected) count as "not anomalous".
            row_scores = np.nan_to_num(scores, nan=0.0)
            nab.write_results(out / "results", detector, item, row_scores,
                              nab.window_labels(item.timestamps, windows[item.key]))
            files.append(nab_scoring.ScoredFile.from_timestamps(item.key, item.timestamps, row_scores,
                                                                windows[item.key]))
        score = nab_scoring.score_corpus(files)
        results[detector] = score
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

    best = max(documents, key=lambda d: float(d["scores"]["standard"]))
    document = {**best, "seconds": round(time.monotonic() - started, 1), "results": str(out / "results"),
                "detectors": documents}
    if args.json is not None:
        write_json(args.json, document)
    sys.stdout.write(nab_scoring.format_scoreboard(results) + "\n")  # the command's output
    return 0
