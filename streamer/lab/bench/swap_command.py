"""``streamer bench swap``: the command-line side of :mod:`streamer.lab.bench.swap`."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from streamer.config import Config
from streamer.json_output import write_json
from streamer.lab.bench import swap
from streamer.lab.bench.broker_commands import workdir_for
from streamer.lab.bench.runs import open_broker


def add_swap_parser(bench_sub: Any, common: argparse.ArgumentParser, positive_int: Any) -> None:
    """Register ``bench swap``."""
    quick, full = swap.QUICK, swap.FULL
    parser = bench_sub.add_parser(
        "swap", parents=[common], help="a model promoted while one daemon scores a fleet under load",
        description="One daemon follows a bundle registry holding the configured bundle and a relabelled "
                    "copy of it. Under a fixed live load the copy is promoted: readings/s before, during "
                    "and after the swap, the longest scoring pause, readings lost or scored twice; then "
                    "the daemon's highest rate with and without a candidate scored in shadow.")
    parser.add_argument("--quick", action="store_true",
                        help=f"{quick.devices:,} devices at {quick.rate:,} readings/s, {quick.measure_s:g} s "
                             f"before and after (about two and a half minutes; default {full.devices:,} "
                             f"devices at {full.rate:,} readings/s, {full.measure_s:g} s)")
    parser.add_argument("--devices", type=positive_int, default=None, help="devices in the synthetic fleet")
    parser.add_argument("--rate", type=positive_int, default=None, help="live readings per second")
    parser.add_argument("--measure-seconds", type=float, default=None,
                        help="length of the before and after windows")
    parser.add_argument("--shadow-rounds", type=int, default=None,
                        help="without/with drain pairs for the shadow cost (0: skip it)")
    parser.add_argument("--shadow-readings", type=positive_int, default=None, help="readings per drain")
    parser.add_argument("--shadow-timeout", type=float, default=None,
                        help=f"seconds to wait for the daemon to score a candidate in shadow before the "
                             f"'with' side is skipped (default {full.shadow_timeout_s:g}; --quick "
                             f"{quick.shadow_timeout_s:g})")
    parser.add_argument("--partitions", type=positive_int, default=None, help="input topic partitions")
    parser.add_argument("--json", type=Path, default=None, help="write the result (a JSON object) here")
    parser.add_argument("--bootstrap-servers", default=None,
                        help="use this broker (default: start the embedded Tansu broker on loopback)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the registry, the daemon's config and log here (default: a temporary "
                             "directory)")
    parser.set_defaults(command="bench-swap", handler=cmd_bench_swap)


def cmd_bench_swap(args: argparse.Namespace, config: Config) -> int:
    """Run the swap benchmark, print its summary, write the JSON; 1 if a reading was lost or repeated."""
    options = swap.options_from(args.quick, devices=args.devices, rate=args.rate,
                                measure_s=args.measure_seconds, shadow_rounds=args.shadow_rounds,
                                shadow_readings=args.shadow_readings, partitions=args.partitions,
                                shadow_timeout_s=args.shadow_timeout)
    console = Console()
    with workdir_for(args.workdir) as workdir, open_broker(args.bootstrap_servers, workdir) as broker:
        console.print(f"broker: {broker.description}")
        record = asyncio.run(swap.run_swap(config, options, broker, workdir, console.print))
    record["quick"] = bool(args.quick)
    print_swap(console, record)
    if args.json is not None:
        write_json(args.json, record)
        console.print(f"written to {args.json}")
    return 0 if record["targets"]["readings_lost_and_scored_twice"]["met"] else 1


def print_swap(console: Console, record: dict[str, Any]) -> None:
    """The swap summary: rates per phase, the pause, the accounting, shadow's cost."""
    table = Table(title=f"streamer bench swap: {record['devices']:,} devices, "
                        f"{record['target_readings_per_s']:,} readings/s offered")
    for column in ("phase", "seconds", "daemon readings/s", "input readings/s", "daemon CPU %"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for name, phase in record["phases"].items():
        table.add_row(name, _n(phase["seconds"], 2), _n(phase["readings_per_s"]), _n(phase["input_per_s"]),
                      _n(phase["daemon_cpu_percent"]))
    console.print(table)
    versions = record["versions"]
    console.print(f"swap {versions['from']} -> {versions['to']}: {record['swap_seconds']} s in the daemon, "
                  f"longest scoring pause {record['max_pause_ms']} ms (target <= {swap.TARGET_PAUSE_MS:g})")
    console.print(f"readings lost: {record['readings_lost']}, scored twice: "
                  f"{record['readings_scored_twice']} ({record['accounting']['produced']:,} produced)")
    shadow = record["shadow"]
    with_ = "skipped" if shadow.get("with_skipped") else _n(shadow["with"])
    console.print(f"shadow: {_n(shadow['without'])} readings/s without a candidate, {with_} with"
                  + (f" ({shadow['with_skipped']})" if shadow.get("with_skipped") else ""))
    console.print(f"machine: {record['machine']}; load average {record['load_average']} at start, "
                  f"{record['load_average_end']} at end")


def _n(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"
