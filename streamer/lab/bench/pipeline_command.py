"""``streamer bench pipeline``: the command-line side of :mod:`streamer.lab.bench.pipeline`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from streamer.config import Config
from streamer.json_output import write_json
from streamer.lab.bench.pipeline import (
    BACKENDS,
    FLEETS,
    FULL_SKIPPED,
    FULL_SWEEP,
    MODES,
    QUICK_SWEEP,
    PipelinePoint,
    Record,
    grid,
    run_sweep,
)

# The targets for the pipeline (2-core development machine).
TARGET_READINGS_PER_S = 200_000
TARGET_POINT = ("stateful", "numpy", 100_000)
TARGET_RSS_MB_AT_1M = 4096


def add_pipeline_parser(bench_sub: Any, common: argparse.ArgumentParser, positive_int: Any) -> None:
    """Register ``bench pipeline``."""
    pipeline = bench_sub.add_parser(
        "pipeline", parents=[common], help="decode + scoring pipeline throughput, no Kafka",
        description="Time decode -> ring buffers -> batched LSTM -> threshold -> alert decision (the "
                    "daemon's ReadingDecoder and ScoringPipeline) per predictor mode, backend and fleet "
                    "size, each configuration in a fresh process (so peak RSS is its own). Without "
                    f"--quick: {len(FULL_SWEEP.points)} configurations, several minutes on 2 cores.")
    pipeline.add_argument("--quick", action="store_true",
                          help="stateful and window with numpy and tensorflow at 100,000 devices, "
                               "stateful/numpy at 1,000 and 1,000,000")
    pipeline.add_argument("--json", type=Path, default=None, help="write the records as a JSON list here")
    pipeline.add_argument("--seconds", type=float, default=None,
                          help=f"time each configuration at least this long (default {FULL_SWEEP.seconds:g}; "
                               f"--quick {QUICK_SWEEP.seconds:g})")
    pipeline.add_argument("--modes", nargs="+", choices=MODES, default=None,
                          help="measure this grid instead (with --backends and --devices)")
    pipeline.add_argument("--backends", nargs="+", choices=BACKENDS, default=None)
    pipeline.add_argument("--devices", nargs="+", type=positive_int, default=None,
                          help=f"fleet sizes (default {', '.join(f'{d:,}' for d in FLEETS)})")
    pipeline.add_argument("--shadow", nargs="+", type=_share, default=None,
                          help="also score a candidate in shadow for this share of devices (0: none); "
                               "each share is a configuration of the grid")
    pipeline.add_argument("--blas-threads", type=positive_int, default=None,
                          help="cap numpy's BLAS threads in each worker (default: as inherited)")
    pipeline.set_defaults(command="bench-pipeline", handler=cmd_bench_pipeline)


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a share between 0 and 1, got {text}")
    return value


def _points(args: argparse.Namespace) -> tuple[list[PipelinePoint], list[tuple[PipelinePoint, str]], float]:
    base = QUICK_SWEEP if args.quick else FULL_SWEEP
    seconds = base.seconds if args.seconds is None else args.seconds
    if args.modes is None and args.backends is None and args.devices is None and args.shadow is None:
        return list(base.points), ([] if args.quick else list(FULL_SKIPPED)), seconds
    points, skipped = grid(args.modes or MODES, args.backends or BACKENDS, args.devices or FLEETS,
                           args.shadow or (0.0,))
    return points, skipped, seconds


def cmd_bench_pipeline(args: argparse.Namespace, config: Config) -> int:
    """Run the sweep, print the table and the targets, write the JSON list."""
    console = Console()
    points, skipped, seconds = _points(args)
    console.print(f"{len(points)} configurations, {seconds:g} s each; predictor.lstm.bundle "
                  f"{config.predictor.lstm.bundle}, thresholds.method {config.thresholds.method}, "
                  f"batching.max_batch {config.batching.max_batch}")
    for point, reason in skipped:
        console.print(f"  skipped {point.label()}: {reason}")

    def progress(record: Record) -> None:
        shadow = f", shadow {record['shadow_fraction']:g}" if record.get("shadow_fraction") else ""
        console.print(f"  {record['mode']}/{record['backend']} x {record['devices']:,} devices{shadow}: "
                      f"{record['readings_per_s']:,.0f} readings/s, peak RSS {record['peak_rss_mb']:,.0f} MB")

    def failed(point: PipelinePoint, reason: str) -> None:
        console.print(f"  FAILED {reason}", style="red")

    records, failures = run_sweep(config, points, seconds=seconds, blas_threads=args.blas_threads,
                                  on_record=progress, on_failure=failed)
    _print_records(console, records)
    for line in target_lines(records):
        console.print(line)
    if args.json is not None:
        write_json(args.json, records)
        console.print(f"{len(records)} records written to {args.json}")
    if failures:
        console.print(f"{len(failures)} configuration(s) failed", style="red")
        return 1
    return 0


def target_lines(records: list[Record]) -> list[str]:
    """The issue's pipeline targets against these records (nothing for targets not measured).

    >>> target_lines([{"mode": "stateful", "backend": "numpy", "devices": 100_000,
    ...                "readings_per_s": 250000.0}])
    ['target: stateful/numpy at 100,000 devices >= 200,000 readings/s: 250,000 (met)']
    """
    lines = []
    mode, backend, devices = TARGET_POINT
    for r in records:
        if (r["mode"], r["backend"], r["devices"]) == TARGET_POINT:
            met = "met" if r["readings_per_s"] >= TARGET_READINGS_PER_S else "NOT met"
            lines.append(f"target: {mode}/{backend} at {devices:,} devices >= {TARGET_READINGS_PER_S:,} "
                         f"readings/s: {r['readings_per_s']:,.0f} ({met})")
    for r in records:
        if r["devices"] == 1_000_000:
            met = "met" if r["peak_rss_mb"] <= TARGET_RSS_MB_AT_1M else "NOT met"
            lines.append(f"target: {r['mode']}/{r['backend']} at 1,000,000 devices within "
                         f"{TARGET_RSS_MB_AT_1M:,} MB RSS: {r['peak_rss_mb']:,.0f} MB ({met})")
    return lines


def _print_records(console: Console, records: list[Record]) -> None:
    table = Table(title="streamer bench pipeline (decode + score, no Kafka)")
    columns = ("mode", "backend", "devices", "readings/s", "decode", "model", "rest", "peak RSS MB",
               "state MB")
    for column in columns:
        table.add_column(column, justify="left" if column in ("mode", "backend") else "right")
    for r in sorted(records, key=lambda r: (r["devices"], r["mode"], r["backend"])):
        table.add_row(r["mode"], r["backend"], f"{r['devices']:,}", f"{r['readings_per_s']:,.0f}",
                      f"{r['decode_share']:.0%}", f"{r['model_share']:.0%}", f"{r['pipeline_share']:.0%}",
                      f"{r['peak_rss_mb']:,.0f}", f"{r['state_table_mb']:,.1f}")
    console.print(table)
    if records:
        console.print(f"machine: {records[0]['machine']}; load average at start "
                      f"{records[0]['load_average']}")
