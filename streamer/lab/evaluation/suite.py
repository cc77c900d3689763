"""``streamer evaluate suite``: every corpus with one configuration, one scoreboard.

1. The corpora are found under ``--datasets`` (the layout of the shared
   datasets folder): ``nab/``, ``skab/`` and every folder in the telemanom
   layout; ``--telemanom DIR`` adds more (a held-out corpus), ``--corpora``
   keeps only some names. A missing corpus is skipped with a log line; none
   at all is an error.
2. Every corpus runs with the same configuration (built-in defaults and
   ``--config``: one ``thresholds.method``, one alerts section; no per-corpus
   overrides) and the training recipe its own ``evaluate`` command uses,
   once per training seed (:mod:`streamer.lab.evaluation.suite_corpora`).
3. With ``--demo-duration`` the simulated fleet runs too, through a real
   broker with the shipped bundle (``streamer demo``, headless).
4. One table and one JSON document (:mod:`streamer.lab.evaluation.suite_report`):
   each metric's mean, minimum and maximum over the seeds, every seed's
   figures and the commands' whole documents, beside the published figures.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from streamer.config import Config
from streamer.json_output import write_json
from streamer.lab.evaluation.recipe import BAD_INPUT, train_bundle
from streamer.lab.evaluation.suite_corpora import (
    TELEMANOM_LABELS,
    CorpusSpec,
    Layout,
    LoadedCorpus,
    Trainer,
    layout_of,
    load,
)
from streamer.lab.evaluation.suite_report import CorpusResult, fleet_section, scoreboard, suite_document

log = logging.getLogger("streamer.evaluate")

# Printed to a file, rich assumes 80 columns and wraps the published column; 120 keeps rows whole.
SCOREBOARD_WIDTH = 120
# Folders of the datasets layout with a fixed name (telemanom folders are found by their layout).
EXPECTED: Mapping[str, Layout] = {"nab": "nab", "skab": "skab"}


def discover(datasets: Path, telemanom_dirs: Sequence[Path] = (), names: Sequence[str] | None = None,
             ) -> tuple[list[CorpusSpec], list[dict[str, str]]]:
    """The corpora to run (nab, skab, telemanom folders, then ``telemanom_dirs``) and those skipped.

    Args:
        datasets: The datasets folder (``nab/``, ``skab/``, telemanom-layout folders).
        telemanom_dirs: More folders in the telemanom layout, named by their folder.
        names: Keep only these corpus names (None: all).

    Returns:
        The corpora found and, for each one left out, ``{"name", "reason"}``
        (each also logged).

    Raises:
        ValueError: Two corpora with one name.
    """
    found: list[CorpusSpec] = []
    missing: list[dict[str, str]] = []
    for name, layout in EXPECTED.items():
        path = datasets / name
        if layout_of(path) == layout:
            found.append(CorpusSpec(name, layout, path))
        else:
            missing.append({"name": name, "reason": f"no {layout} corpus at {path}"})
    folders = sorted(p for p in datasets.iterdir() if p.is_dir()) if datasets.is_dir() else []
    found += [CorpusSpec(p.name, "telemanom", p) for p in folders
              if p.name not in EXPECTED and layout_of(p) == "telemanom"]
    for path in telemanom_dirs:
        if layout_of(path) == "telemanom":
            found.append(CorpusSpec(path.name, "telemanom", path))
        else:
            missing.append({"name": path.name, "reason": f"{path} is not in the telemanom layout "
                                                         f"(train/, test/, {TELEMANOM_LABELS})"})
    seen: dict[str, Path] = {}
    for spec in found:
        if spec.name in seen:
            raise ValueError(f"two corpora named {spec.name}: {seen[spec.name]} and {spec.path}")
        seen[spec.name] = spec.path
    if names is not None:
        found = [spec for spec in found if spec.name in names]
        missing = [item for item in missing if item["name"] in names]
        missing += [{"name": name, "reason": f"no corpus of that name under {datasets}"}
                    for name in dict.fromkeys(names)
                    if name not in seen and all(item["name"] != name for item in missing)]
    for item in missing:
        log.warning("corpus %s skipped: %s", item["name"], item["reason"])
    return found, missing


def run_corpus(corpus: LoadedCorpus, config: Config, seeds: Sequence[int], out: Path,
               trainer: Trainer = train_bundle) -> CorpusResult:
    """Run ``corpus`` once per training seed; bundles and results go to ``out/<name>/seed-<seed>/``."""
    started = time.monotonic()
    runs = []
    for seed in seeds:
        run = corpus.run(config, seed, out / corpus.spec.name / f"seed-{seed}", trainer)
        log.info("%s seed %d: %s (%.0f s)", corpus.spec.name, seed,
                 ", ".join(f"{name} {value:.3f}" for name, value in run.metrics.items()), run.seconds)
        runs.append(run)
    return CorpusResult(corpus.spec, runs, time.monotonic() - started)


def run_fleet(config: Config, duration_s: float) -> dict[str, Any]:
    """``streamer demo`` headless for ``duration_s`` seconds (the embedded broker if none answers)."""
    from streamer.demo import DemoOptions, run_demo

    summary = asyncio.run(run_demo(config, DemoOptions(duration_s=duration_s, live=False),
                                   Console(stderr=True)))
    return fleet_section(summary, duration_s=duration_s, bundle=config.predictor.lstm.bundle)


def run_suite(args: argparse.Namespace, config: Config, trainer: Trainer = train_bundle) -> int:
    """The command: find and read the corpora, run every seed, the fleet, write JSON, print the table."""
    started = time.monotonic()
    seeds: list[int] = args.seeds
    if len(set(seeds)) != len(seeds):
        log.error("--seeds must be distinct, got %s", " ".join(map(str, seeds)))
        return BAD_INPUT
    if args.demo_duration < 0:
        log.error("--demo-duration must be >= 0, got %s", args.demo_duration)
        return BAD_INPUT
    try:
        specs, skipped = discover(args.datasets, args.telemanom, args.corpora)
    except ValueError as exc:
        log.error("%s", exc)  # noqa: TRY400  # the message names both folders
        return BAD_INPUT
    if not specs:
        log.error("no corpus found under %s%s", args.datasets,
                  f" named {' '.join(args.corpora)}" if args.corpora else "")
        return BAD_INPUT
    corpora = []
    for spec in specs:  # every corpus is read before any training: a bad file fails in seconds
        try:
            corpora.append(load(spec))
        except (OSError, ValueError) as exc:
            log.error("cannot read the %s corpus %s: %s", spec.layout, spec.name, exc)  # noqa: TRY400
            return BAD_INPUT
    log.info("corpora: %s; seeds %s; thresholds.method %s", ", ".join(s.name for s in specs),
             " ".join(map(str, seeds)), config.thresholds.method)

    results: list[CorpusResult] = []

    def document(fleet: dict[str, Any] | None, *, complete: bool) -> dict[str, Any]:
        return suite_document(results, seeds=seeds, config=config, skipped=skipped, fleet=fleet,
                              seconds=time.monotonic() - started, complete=complete)

    for corpus in corpora:
        results.append(run_corpus(corpus, config, seeds, args.out, trainer))
        write_json(args.json, document(None, complete=False))  # a long run that stops keeps what it did
    fleet = run_fleet(config, args.demo_duration) if args.demo_duration > 0 else None
    write_json(args.json, document(fleet, complete=True))
    log.info("results written to %s", args.json)
    console = Console()
    if not console.is_terminal:  # a log file: rich would wrap the table at 80 columns
        console = Console(width=SCOREBOARD_WIDTH)
    console.print(scoreboard(results, seeds, fleet))
    return 0 if fleet is None or fleet["summary"]["daemon_exit_code"] == 0 else 1
