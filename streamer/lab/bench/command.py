"""``streamer bench``: the ``model`` benchmark's command line, and where every benchmark is registered.

``pipeline`` lives in :mod:`streamer.lab.bench.pipeline_command`, ``e2e`` and
``scaleout`` in :mod:`streamer.lab.bench.broker_commands`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from streamer.config import Config
from streamer.errors import StreamerError
from streamer.json_output import write_json
from streamer.lab.bench.broker_commands import add_broker_parsers
from streamer.lab.bench.model import (
    BACKENDS,
    FULL_SWEEP,
    KEY_BATCH,
    MODES,
    QUICK_SWEEP,
    WARMUP_CALLS,
    Failure,
    Record,
    Skip,
    Sweep,
    key_ratios,
    plan,
    run_sweep,
)
from streamer.lab.bench.pipeline_command import add_pipeline_parser
from streamer.lab.bench.swap_command import add_swap_parser

log = logging.getLogger("streamer.lab.bench")


def add_bench_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``bench`` and its benchmarks on the top-level subparsers ``sub``."""
    bench = sub.add_parser("bench", help="measure throughput and memory",
                           description="Benchmarks: `streamer bench BENCHMARK --help`. model: the forecaster "
                                       "alone; pipeline: decode + scoring without Kafka; e2e: one daemon "
                                       "against the broker; scaleout: several daemons in one group; "
                                       "swap: a model promoted under load.")
    # The options live on each benchmark; main() still reads them.
    bench.set_defaults(command="bench", handler=lambda args, config: _help(bench), config=None,
                       log_level=None)
    bench_sub = bench.add_subparsers(title="benchmarks", metavar="BENCHMARK")
    model = bench_sub.add_parser(
        "model", parents=[common], help="LSTM predictor throughput per mode, backend, batch, fleet size",
        description="Time LSTMPredictor.observe per mode, backend, batch and fleet size, each "
                    "configuration in a fresh process (so peak RSS is its own). Without --quick, "
                    "the full sweep measures 63 configurations: well over ten minutes on 2 cores.")
    model.add_argument("--quick", action="store_true",
                       help=f"every mode and backend at batch {KEY_BATCH} x 100,000 devices only")
    model.add_argument("--bundle", default="default",
                       help="bundle directory (default: the bundle shipped in the package)")
    model.add_argument("--json", type=Path, default=None, help="write the records as a JSON list here")
    model.add_argument("--seconds", type=float, default=None,
                       help=f"time each configuration at least this long (default {FULL_SWEEP.seconds:g}; "
                            f"--quick {QUICK_SWEEP.seconds:g})")
    model.add_argument("--modes", nargs="+", choices=MODES, default=None, help="override the sweep's modes")
    model.add_argument("--backends", nargs="+", choices=BACKENDS, default=None,
                       help="override the sweep's backends")
    model.add_argument("--batches", nargs="+", type=_positive_int, default=None,
                       help="override the sweep's batch sizes")
    model.add_argument("--devices", nargs="+", type=_positive_int, default=None,
                       help="override the sweep's fleet sizes")
    model.add_argument("--blas-threads", type=_positive_int, default=None,
                       help="cap numpy's BLAS threads in each worker (OPENBLAS_NUM_THREADS, "
                            "MKL_NUM_THREADS; default: as inherited, usually one per core)")
    model.set_defaults(command="bench-model", handler=cmd_bench_model)
    add_pipeline_parser(bench_sub, common, _positive_int)
    add_broker_parsers(bench_sub, common, _positive_int)
    add_swap_parser(bench_sub, common, _positive_int)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _sweep(args: argparse.Namespace) -> Sweep:
    base = QUICK_SWEEP if args.quick else FULL_SWEEP
    return Sweep(
        modes=tuple(args.modes or base.modes),
        backends=tuple(args.backends or base.backends),
        batches=tuple(args.batches or base.batches),
        devices=tuple(args.devices or base.devices),
        seconds=base.seconds if args.seconds is None else args.seconds,
    )


def _resolve_bundle(name: str) -> Path | None:
    from models.bundle import DEFAULT_BUNDLE, METADATA_FILE, default_bundle_path

    path = default_bundle_path() if name == DEFAULT_BUNDLE else Path(name)
    return path if (path / METADATA_FILE).is_file() else None


def cmd_bench_model(args: argparse.Namespace, config: Config) -> int:
    """Run the sweep, print the table and the key ratio, write the JSON list.

    Raises:
        StreamerError: The bundle does not exist.
    """
    bundle = _resolve_bundle(args.bundle)
    if bundle is None:
        where = ("no bundle shipped in models/bundles/default (build it with `make bundle`)"
                 if args.bundle == "default" else f"{args.bundle}: not a model bundle (no bundle.json)")
        raise StreamerError(f"bench model: {where}; or pass --bundle DIR")
    console = Console()
    sweep = _sweep(args)
    points, skipped = plan(sweep)
    console.print(f"bundle {bundle}: {len(points)} configurations, {sweep.seconds:g} s each "
                  f"after {WARMUP_CALLS} warm-up calls, {len(skipped)} skipped")
    _print_skips(console, skipped)

    def progress(record: Record) -> None:
        console.print(f"  {record['mode']}/{record['backend']} batch {record['batch']:,} x "
                      f"{record['devices']:,} devices: {record['points_per_s']:,.0f} points/s, "
                      f"peak RSS {record['peak_rss_mb']:,.0f} MB")

    def failed(failure: Failure) -> None:
        console.print(f"  FAILED {failure.reason}", style="red")

    records, failures = run_sweep(bundle, points, seconds=sweep.seconds, blas_threads=args.blas_threads,
                                  on_record=progress, on_failure=failed)
    _print_records(console, records)
    _print_key_ratio(console, records)
    if args.json is not None:
        write_json(args.json, records)
        console.print(f"{len(records)} records written to {args.json}")
    if failures:
        console.print(f"{len(failures)} configuration(s) failed", style="red")
        return 1
    return 0


def _print_skips(console: Console, skipped: list[Skip]) -> None:
    by_reason: dict[str, list[str]] = defaultdict(list)
    for skip in skipped:
        point = skip.point
        by_reason[skip.reason].append(f"{point.mode}/{point.backend} {point.batch}x{point.devices}")
        log.debug("skipped %s", dataclasses.asdict(point))
    for reason, labels in by_reason.items():
        console.print(f"  skipped ({reason}): {', '.join(labels)}")


def _print_records(console: Console, records: list[Record]) -> None:
    table = Table(title="streamer bench model")
    columns = ("mode", "backend", "batch", "devices", "points/s", "peak RSS MB", "state MB", "vs window/tf")
    for column in columns:
        table.add_column(column, justify="left" if column in ("mode", "backend") else "right")
    for r in sorted(records, key=lambda r: (r["devices"], r["batch"], r["mode"], r["backend"])):
        speedup = r.get("speedup_vs_window_tensorflow")
        table.add_row(r["mode"], r["backend"], f"{r['batch']:,}", f"{r['devices']:,}",
                      f"{r['points_per_s']:,.0f}", f"{r['peak_rss_mb']:,.0f}", f"{r['state_table_mb']:,.1f}",
                      "" if speedup is None else f"{speedup:.2f}x")
    console.print(table)
    if records:
        first = records[0]
        threads = first.get("blas_threads") or "one per core"
        console.print(f"machine: {first['machine']}; keras backend {first['keras_backend']}; "
                      f"BLAS threads {threads}")


def _print_key_ratio(console: Console, records: list[Record]) -> None:
    ratios = key_ratios(records)
    if not ratios:
        console.print(f"key ratio: needs stateful/numpy and window/tensorflow at batch {KEY_BATCH}")
        return
    for devices, stateful, window, ratio in ratios:
        console.print(f"key ratio at batch {KEY_BATCH} x {devices:,} devices: stateful/numpy "
                      f"{stateful:,.0f} ÷ window/tensorflow {window:,.0f} points/s = {ratio:.2f}x")
