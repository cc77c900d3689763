"""``streamer evaluate nab | telemanom | skab | suite | csv``: labelled data through the production path."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.config import Config
from streamer.json_output import write_json
from streamer.lab.evaluation.recipe import BAD_INPUT, TrainingOptions, configured, train_bundle

if TYPE_CHECKING:
    from streamer.lab.evaluation.events import EventCounts

log = logging.getLogger("streamer.evaluate")

METHODS = ("zscore", "dynamic", "likelihood")


def add_evaluate_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``evaluate`` and its corpora on the top-level subparsers ``sub``."""
    evaluate = sub.add_parser("evaluate", help="score labelled data through the production path",
                              description="Replay labelled series through decode, ring buffers, batcher, "
                                          "predictor, threshold and alert episodes (no Kafka).")
    evaluate.set_defaults(command="evaluate", handler=lambda args, config: _help(evaluate), config=None,
                          log_level=None)
    corpora = evaluate.add_subparsers(title="corpora", metavar="CORPUS")

    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--method", choices=METHODS, default=None,
                       help="threshold method (default: thresholds.method of the config)")
    model.add_argument("--mode", choices=("stateful", "window"), default=None,
                       help="predictor mode (default: predictor.lstm.mode of the config)")
    model.add_argument("--bundle", type=Path, default=None,
                       help="use this trained bundle instead of training one on the corpus")
    # None: TrainingOptions' default.
    model.add_argument("--epochs", type=int, default=None,
                       help="most training epochs; training stops early when the held-out loss stops "
                            "improving (default 20)")
    model.add_argument("--range-margin", type=float, default=None,
                       help="turn on range novelty with this margin (thresholds.range_novelty.margin; "
                            "default: the config's, off)")
    model.add_argument("--seed", type=int, default=7, help="training seed (default 7)")
    model.add_argument("--window", type=int, default=32, help="training sequence length (default 32)")
    model.add_argument("--stride", type=int, default=None,
                       help="steps between training sequence starts (default 2)")
    model.add_argument("--units", type=int, default=32, help="LSTM units per layer (default 32)")
    model.add_argument("--layers", type=int, default=1, help="stacked LSTM layers (default 1)")
    model.add_argument("--max-sequences", type=int, default=60_000,
                       help="most training sequences, a seeded random subset (default 60000)")
    model.add_argument("--learning-rate", type=float, default=0.003,
                       help="initial Adam learning rate (default 0.003)")
    model.add_argument("--json", type=Path, default=None, help="write the results as JSON here")

    nab = corpora.add_parser(
        "nab", parents=[common, model], help="Numenta Anomaly Benchmark corpus",
        description="Trains one forecaster on every series' probationary part (the first 15%%, at most "
                    "750 rows, which NAB lets a detector learn from), replays all 58 series as one "
                    "fleet, writes the NAB results layout and scores it.")
    nab.add_argument("--data", type=Path, required=True, help="corpus root (holds data/ and labels/)")
    nab.add_argument("--out", type=Path, required=True, help="results root (writes results/<detector>/...)")
    nab.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                     help="evaluate several threshold methods in one run (default: --method)")
    _add_operator(nab)
    nab.set_defaults(command="evaluate nab", handler=cmd_nab)

    telemanom = corpora.add_parser(
        "telemanom", parents=[common, model], help="SMAP/MSL spacecraft telemetry layout",
        description="Trains on DIR/train/*.npy (column 0), detects on DIR/test/*.npy, and reports "
                    "event-level precision, recall and F1 per spacecraft and in total.")
    telemanom.add_argument("--data", type=Path, required=True, help="directory with train/ and test/")
    telemanom.add_argument("--labels", type=Path, required=True, help="labeled_anomalies.csv")
    telemanom.add_argument("--out", type=Path, default=None, help="where to keep the trained bundle")
    _add_operator(telemanom)
    telemanom.set_defaults(command="evaluate telemanom", handler=cmd_telemanom)

    skab = corpora.add_parser(
        "skab", parents=[common, model], help="Skoltech Anomaly Benchmark (SKAB v0.9)",
        description="Trains one forecaster on the first 400 rows of every experiment (SKAB's training "
                    "split), replays all 34 experiments as one fleet, and scores the test rows as SKAB "
                    "does: point-wise F1, FAR and MAR, and its NAB variant on detected changepoints.")
    skab.add_argument("--data", type=Path, required=True,
                      help="corpus root (holds valve1/, valve2/, other/)")
    skab.add_argument("--out", type=Path, default=None,
                      help="where to keep the trained bundle (default skab-bundle)")
    skab.add_argument("--window-seconds", type=int, default=60,
                      help="changepoint window to the right of each labelled changepoint (default 60; "
                           "SKAB's notebooks use 30, reported too)")
    _add_operator(skab)
    skab.set_defaults(command="evaluate skab", handler=cmd_skab)

    suite = corpora.add_parser(
        "suite", parents=[common], help="every corpus with one configuration, one scoreboard",
        description="Runs nab/, skab/ and every telemanom-layout folder under --datasets with the same "
                    "configuration (built-in defaults and --config) and each corpus' own training recipe, "
                    "once per training seed, optionally the simulated fleet too, and prints one "
                    "scoreboard beside the published figures.")
    suite.add_argument("--datasets", type=Path, required=True,
                       help="folder holding nab/, skab/ and telemanom-layout folders (train/, test/, "
                            "labeled_anomalies.csv)")
    suite.add_argument("--json", type=Path, required=True, help="write every figure as JSON here")
    suite.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9],
                       help="training seeds, one run of each corpus per seed (default 7 8 9)")
    suite.add_argument("--corpora", nargs="+", default=None, metavar="NAME",
                       help="run only these corpora (folder names: nab, skab, msl, ...)")
    suite.add_argument("--telemanom", type=Path, nargs="+", action="extend", default=[], metavar="DIR",
                       help="more folders in the telemanom layout (a held-out corpus), named by folder")
    suite.add_argument("--demo-duration", type=float, default=0.0, metavar="SECONDS",
                       help="also run the simulated fleet (streamer demo, headless) this long "
                            "(default 0: skip)")
    suite.add_argument("--out", type=Path, default=Path("suite-out"),
                       help="where bundles and NAB results go, <out>/<corpus>/seed-<n>/ (default suite-out)")
    suite.set_defaults(command="evaluate suite", handler=cmd_suite)

    csv_parser = corpora.add_parser(
        "csv", parents=[common, model], help="your own readings file and labelled windows",
        description="Readings from .csv/.parquet (timestamp, device and value columns) and labels as "
                    "JSON {device: [[start, end], ...]} or CSV device_id,start,end.")
    csv_parser.add_argument("--data", type=Path, required=True, help="readings file (.csv or .parquet)")
    csv_parser.add_argument("--labels", type=Path, required=True, help="labelled windows (.json or .csv)")
    csv_parser.add_argument("--device-column", default="device_id", help="device column (default device_id)")
    csv_parser.add_argument("--value-columns", default=None, help="comma-separated channel columns")
    csv_parser.add_argument("--timestamp-column", default="timestamp", help="time column (default timestamp)")
    csv_parser.add_argument("--train-fraction", type=float, default=0.15,
                            help="leading share of each device's readings to train on when no --bundle "
                                 "is given (default 0.15)")
    csv_parser.add_argument("--out", type=Path, default=None, help="where to keep the trained bundle")
    csv_parser.set_defaults(command="evaluate csv", handler=cmd_csv)


def _add_operator(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--operator", type=int, default=None, metavar="DELAY",
                        help="also replay with a simulated operator that answers every alert from the "
                             "labels DELAY readings after it opens and reports missed anomalies DELAY "
                             "readings after their end; report precision, recall, F1 and false positives "
                             "without and with it (JSON: operator)")


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def cmd_telemanom(args: argparse.Namespace, config: Config) -> int:
    """``streamer evaluate telemanom``."""
    from streamer.lab.evaluation import operator, telemanom

    if args.operator is not None and args.operator < 1:
        log.error("--operator must be at least 1 reading, got %d", args.operator)
        return BAD_INPUT
    try:
        channels = telemanom.read_corpus(args.data, args.labels)
    except ValueError as exc:
        log.error("cannot read the corpus: %s", exc)  # noqa: TRY400  # the message names the file
        return BAD_INPUT
    bundle = args.bundle
    if bundle is None:
        out = args.out or Path("telemanom-bundle")
        bundle = train_bundle(telemanom.training_series(channels), out, channels=("value",),
                              options=TrainingOptions.from_args(args),
                              description=telemanom.training_description(args.data))
    evaluated = configured(config, method=args.method, mode=args.mode, bundle=bundle,
                           range_margin=args.range_margin, channels=("value",))
    report = telemanom.evaluate(evaluated, channels)
    document = report.as_dict()
    if args.operator is not None:
        answered = telemanom.evaluate(evaluated, channels, operator_delay=args.operator)
        document["operator"] = operator.comparison(
            args.operator, _event_summary(report.total), _event_summary(answered.total),
            feedback=answered.replay.feedback)
    _write_json(args.json, document)
    _print_event_table("spacecraft", document["spacecraft"], document)
    if args.operator is not None:
        sys.stdout.write(operator.format_comparison(document["operator"], "labelled sequences and alert "
                                                                          "episodes, test part") + "\n")
    return 0


def _event_summary(counts: EventCounts) -> dict[str, Any]:
    from streamer.lab.evaluation.operator import summary

    return summary(tp=counts.tp, fp=counts.fp, fn=counts.fn)


def cmd_csv(args: argparse.Namespace, config: Config) -> int:
    """``streamer evaluate csv``."""
    from models.data import load_table
    from streamer.lab.evaluation import labeled_csv

    try:
        value_columns = [c.strip() for c in args.value_columns.split(",")] if args.value_columns else None
        data = load_table(args.data, device_column=args.device_column, value_columns=value_columns,
                          timestamp_column=args.timestamp_column)
        labels = labeled_csv.read_labels(args.labels)
    except (OSError, ValueError) as exc:
        log.error("cannot read the data: %s", exc)  # noqa: TRY400  # the message names the file
        return BAD_INPUT
    if not 0 < args.train_fraction < 1:
        log.error("--train-fraction must be between 0 and 1")
        return BAD_INPUT
    bundle = args.bundle
    if bundle is None:
        head = {device: values[: max(2, int(len(values) * args.train_fraction))]
                for device, values in data.series.items()}
        bundle = train_bundle(head, args.out or Path("evaluate-bundle"), channels=data.channels,
                              options=TrainingOptions.from_args(args),
                              description=f"first {args.train_fraction:.0%} of {args.data}")
    report = labeled_csv.evaluate(
        configured(config, method=args.method, mode=args.mode, bundle=bundle, channels=data.channels,
                   range_margin=args.range_margin),
        data.series, data.timestamps, labels)
    document = report.as_dict()
    _write_json(args.json, document)
    _print_event_table("device", document["devices"], document)
    return 0


def cmd_skab(args: argparse.Namespace, config: Config) -> int:
    """``streamer evaluate skab`` (wired in :mod:`streamer.lab.evaluation.skab_run`)."""
    from streamer.lab.evaluation.skab_run import run_skab

    return run_skab(args, config)


def cmd_nab(args: argparse.Namespace, config: Config) -> int:
    """``streamer evaluate nab`` (wired in :mod:`streamer.lab.evaluation.nab_run`)."""
    from streamer.lab.evaluation.nab_run import run_nab

    return run_nab(args, config)


def cmd_suite(args: argparse.Namespace, config: Config) -> int:
    """``streamer evaluate suite`` (wired in :mod:`streamer.lab.evaluation.suite`)."""
    from streamer.lab.evaluation.suite import run_suite

    return run_suite(args, config)


def _write_json(path: Path | None, document: Any) -> None:
    if path is None:
        return
    write_json(path, document)
    log.info("results written to %s", path)


def _print_event_table(
    label: str, groups: Mapping[str, Mapping[str, float]], overall: Mapping[str, Any]
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"event-level results ({overall['method']}, model {overall['model_version']})")
    for column in (label, "TP", "FP", "FN", "precision", "recall", "F1"):
        table.add_column(column, justify="left" if column == label else "right")
    rows = [*groups.items(), ("total", overall)]
    for name, counts in rows:
        table.add_row(name, str(counts["tp"]), str(counts["fp"]), str(counts["fn"]),
                      f"{counts['precision']:.3f}", f"{counts['recall']:.3f}", f"{counts['f1']:.3f}")
    Console().print(table)
