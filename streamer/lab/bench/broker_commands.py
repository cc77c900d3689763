"""``streamer bench e2e`` and ``streamer bench scaleout``: the command-line side of the broker benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from streamer.config import Config
from streamer.json_output import write_json
from streamer.lab.bench import e2e, scaleout
from streamer.lab.bench.runs import open_broker


def add_broker_parsers(bench_sub: Any, common: argparse.ArgumentParser, positive_int: Any) -> None:
    """Register ``bench e2e`` and ``bench scaleout``."""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--json", type=Path, default=None, help="write the result (a JSON object) here")
    shared.add_argument("--bootstrap-servers", default=None,
                        help="use this broker (default: start the embedded Tansu broker on loopback)")
    shared.add_argument("--workdir", type=Path, default=None,
                        help="keep the daemons' configs and logs here (default: a temporary directory)")
    shared.add_argument("--devices", type=positive_int, default=None, help="devices in the synthetic fleet")
    shared.add_argument("--backlog-steps", type=positive_int, default=None,
                        help="readings per device in the backlog")
    shared.add_argument("--partitions", type=positive_int, default=None, help="input topic partitions")

    quick, full, fleet = e2e.QUICK, e2e.FULL, e2e.QUICK_FLEET
    bench_e2e = bench_sub.add_parser(
        "e2e", parents=[common, shared],
        help="one daemon vs the raw aiokafka path and the naive predict() path",
        description="The daemon (`streamer run`) against the broker on loopback: its highest throughput "
                    "(draining a backlog) next to aiokafka consuming and decoding the same topic, and a "
                    "per-reading Keras predict() path; event->alert latency at fixed loads; a sustained "
                    "ladder. Config options (predictor, thresholds, batching) come from --config.")
    bench_e2e.add_argument("--quick", action="store_true",
                           help=f"{quick.devices:,} devices x {quick.backlog_steps} backlog, "
                                f"{quick.measure_s:g} s per load (about 4 minutes; default: "
                                f"{full.backlog_steps} readings per device, {full.measure_s:g} s per load)")
    bench_e2e.add_argument("--quick-fleet", action="store_true",
                           help=f"{fleet.devices:,} devices x {fleet.backlog_steps} backlog, "
                                f"{' '.join(map(str, fleet.loads))} readings/s for {fleet.measure_s:g} s, no "
                                "ladder, then a restart that restores every device (about seven minutes)")
    bench_e2e.add_argument("--no-throughput", action="store_true",
                           help="fixed loads only: skip the raw, naive, drain and ladder paths")
    bench_e2e.add_argument("--restore", action="store_true", default=None,
                           help="after each fixed load, time a fresh daemon restoring every device")
    bench_e2e.add_argument("--loads", nargs="+", type=positive_int, default=None,
                           help=f"fixed loads, readings/s (default {' '.join(map(str, full.loads))})")
    bench_e2e.add_argument("--warm-seconds", type=float, default=None, help="warm-up before each load")
    bench_e2e.add_argument("--measure-seconds", type=float, default=None, help="measured span of each load")
    bench_e2e.add_argument("--ladder", nargs="*", type=float, default=None,
                           help="sustained steps as fractions of the drain rate (none: skip the ladder)")
    bench_e2e.add_argument("--ladder-seconds", type=float, default=None, help="length of each ladder step")
    bench_e2e.add_argument("--naive-seconds", type=float, default=None, help="time the naive path this long")
    bench_e2e.add_argument("--naive-max-readings", type=positive_int, default=None,
                           help="... or for this many readings, whichever comes first")
    bench_e2e.add_argument("--drain-timeout", type=float, default=None,
                           help=f"seconds any path may take to read a backlog "
                                f"(default {full.drain_timeout_s:g}; a million devices need more)")
    bench_e2e.add_argument("--alerts-per-s", type=float, default=None,
                           help=f"spikes injected per second at every load (default {full.alerts_per_s:g})")
    bench_e2e.set_defaults(command="bench-e2e", handler=cmd_bench_e2e)

    bench_scaleout = bench_sub.add_parser(
        "scaleout", parents=[common, shared], help="1, 2, 4 daemon processes in one consumer group",
        description="Several `streamer run` processes in one consumer group drain one topic's backlog; "
                    "per-process and total throughput over the window in which the group is stable, "
                    "and where the CPU went (the broker and the daemons share this machine).")
    bench_scaleout.add_argument("--quick", action="store_true",
                                help=f"{scaleout.QUICK.backlog_steps} readings per device "
                                     f"(default {scaleout.FULL.backlog_steps})")
    bench_scaleout.add_argument("--processes", nargs="+", type=positive_int, default=None,
                                help="process counts (default 1 2 4)")
    bench_scaleout.set_defaults(command="bench-scaleout", handler=cmd_bench_scaleout)


@contextlib.contextmanager
def workdir_for(path: Path | None) -> Iterator[Path]:
    """``path`` (created), or a temporary directory removed afterwards."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="streamer-bench-") as scratch:
        yield Path(scratch)


def _write(console: Console, path: Path | None, record: dict[str, Any]) -> None:
    if path is None:
        return
    write_json(path, record)
    console.print(f"written to {path}")


def cmd_bench_e2e(args: argparse.Namespace, config: Config) -> int:
    """Run the e2e benchmark, print its summary, write the JSON object."""
    if args.quick and args.quick_fleet:
        raise SystemExit("streamer bench e2e: choose --quick or --quick-fleet, not both")
    options = e2e.options_from(
        "fleet" if args.quick_fleet else args.quick, devices=args.devices, backlog_steps=args.backlog_steps,
        partitions=args.partitions,
        loads=tuple(args.loads) if args.loads else None, warm_s=args.warm_seconds,
        measure_s=args.measure_seconds, ladder=tuple(args.ladder) if args.ladder is not None else None,
        ladder_s=args.ladder_seconds, naive_seconds=args.naive_seconds,
        naive_max_readings=args.naive_max_readings, alerts_per_s=args.alerts_per_s,
        throughput=False if args.no_throughput else None, restore=args.restore,
        drain_timeout_s=args.drain_timeout)
    console = Console()
    with workdir_for(args.workdir) as workdir, open_broker(args.bootstrap_servers, workdir) as broker:
        console.print(f"broker: {broker.description}")
        record = asyncio.run(e2e.run_e2e(config, options, broker, workdir, console.print))
    record["quick"] = "fleet" if args.quick_fleet else bool(args.quick)
    print_e2e(console, record)
    _write(console, args.json, record)
    return 0


def print_e2e(console: Console, record: dict[str, Any]) -> None:
    """The e2e summary: throughputs and ratios, latency per load, targets."""
    table = Table(title="streamer bench e2e")
    table.add_column("path")
    table.add_column("readings/s", justify="right")
    table.add_column("streamer ÷ path", justify="right")
    streamer = record["streamer_max_readings_per_s"]
    table.add_row("streamer (one daemon, backlog drain)", _n(streamer), "")
    table.add_row("raw aiokafka consume + decode", _n(record["raw_aiokafka_max_readings_per_s"]),
                  _x(record["ratio_to_raw"]))
    table.add_row("naive per-reading predict()", _n(record["naive_predict_readings_per_s"], 1),
                  _x(record["ratio_to_naive"]))
    table.add_row("streamer, sustained live input", _n(record["sustained_max_readings_per_s"]), "")
    console.print(table)
    loads = Table(title="fixed loads: event -> alert latency (ms)")
    for column in ("readings/s", "achieved", "handled", "lag bounded", "p50", "p99", "p99.9", "alerts",
                   "longest pause"):
        loads.add_column(column, justify="right")
    for load in record["loads"]:
        latency = record["latency_ms"][str(load["rate"])]
        loads.add_row(f"{load['rate']:,}", _n(load["achieved_per_s"]), _n(load["handled_per_s"]),
                      "yes" if load["lag_bounded"] else "NO", _n(latency["p50"], 1), _n(latency["p99"], 1),
                      _n(latency["p999"], 1), str(load["latency_samples"]),
                      _n(load["max_scoring_pause_ms"], 1))
    console.print(loads)
    for load in record["loads"]:
        if restore := load.get("restore"):
            console.print(f"restart after {load['rate']:,} readings/s: {restore['devices_restored']:,} "
                          f"devices restored {restore['start_to_restored_seconds']} s after the start "
                          f"({restore['partition_seconds_sum']} s in {restore['partitions']} partition "
                          f"restores), longest pause {restore['max_scoring_pause_ms']} ms")
    for name, target in record["targets"].items():
        met = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        console.print(f"target {name} {target['target']}: {target['value']} ({met})")
    console.print(f"machine: {record['machine']}; load average {record['load_average']} at start, "
                  f"{record['load_average_end']} at end")


def cmd_bench_scaleout(args: argparse.Namespace, config: Config) -> int:
    """Run the scale-out benchmark, print its summary, write the JSON object."""
    options = scaleout.options_from(
        args.quick, devices=args.devices, backlog_steps=args.backlog_steps, partitions=args.partitions,
        processes=tuple(args.processes) if args.processes else None)
    console = Console()
    with workdir_for(args.workdir) as workdir, open_broker(args.bootstrap_servers, workdir) as broker:
        console.print(f"broker: {broker.description}")
        record = asyncio.run(scaleout.run_scaleout(config, options, broker, workdir, console.print))
    record["quick"] = bool(args.quick)
    table = Table(title="streamer bench scaleout")
    for column in ("processes", "total/s", "per process/s", "vs one", "daemon CPU %", "broker CPU %"):
        table.add_column(column, justify="right")
    for phase in record["phases"]:
        table.add_row(str(phase["processes"]), _n(phase["total_per_s"]),
                      ", ".join(_n(r) for r in phase["per_process_per_s"]), _x(phase["scaling_vs_one"]),
                      ", ".join(_n(c) for c in phase["daemon_cpu_percent"]), _n(phase["broker_cpu_percent"]))
    console.print(table)
    for phase in record["phases"]:
        console.print(f"{phase['processes']} process(es), bounded by {phase['bound']}"
                      + ("" if phase["stable_window"] else " (no stable window: rates over the whole drain)"))
    console.print(f"machine: {record['machine']}; load average {record['load_average']} at start, "
                  f"{record['load_average_end']} at end")
    _write(console, args.json, record)
    return 0


def _n(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _x(value: float | None) -> str:
    return "" if value is None else f"{value:,.2f}x"
