"""``streamer chaos``: the command-line side of :mod:`streamer.lab.chaos.scenario`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from streamer.config import Config
from streamer.json_output import write_json
from streamer.lab.chaos.plan import FULL, QUICK

# Keys shown in the summary table, in order.
SUMMARY_KEYS = ("kills", "terms", "outages", "swaps", "readings", "hostile_records", "readings_accounted",
                "injected_anomalies", "reference_alerted_anomalies", "alerted_anomalies", "unique_alerts",
                "reference_alerts", "alerts_missing", "alerts_extra", "duplicate_alerts", "duration_s")


def add_chaos_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``chaos`` on the top-level subparsers ``sub``."""
    chaos = sub.add_parser(
        "chaos", parents=[common], help="kill daemons and pause the broker under load; verify delivery",
        description="Run daemons against the embedded broker while a deterministic fleet (with anomalies "
                    "and hostile records) is produced; SIGKILL, SIGTERM and restart daemons and pause the "
                    "broker; then verify from Kafka that every record was processed and every alert "
                    "delivered. Verdict ALL-DELIVERED, MORE or LESS; exits 1 unless ALL-DELIVERED. "
                    "--quick takes a few minutes; the full run about ten.")
    chaos.add_argument("--quick", action="store_true",
                       help=f"{QUICK.daemons} daemons, {QUICK.devices} devices, {QUICK.duration_s:g} s")
    chaos.add_argument("--json", type=Path, default=None, help="write the result as JSON here")
    chaos.add_argument("--workdir", type=Path, default=None,
                       help="daemon configs and logs (default: a new temporary directory, kept)")
    chaos.add_argument("--seed", type=int, default=None, help="fleet and fault schedule seed")
    chaos.add_argument("--duration", type=float, default=None, help="seconds of production")
    chaos.add_argument("--devices", type=_positive, default=None, help="devices in the fleet")
    chaos.add_argument("--daemons", type=_positive, default=None, help="daemon processes")
    chaos.add_argument("--kills", type=_non_negative, default=None, help="single SIGKILLs")
    chaos.add_argument("--terms", type=_non_negative, default=None, help="SIGTERMs mid-run")
    chaos.add_argument("--outages", type=_non_negative, default=None, help="broker pauses")
    chaos.add_argument("--swaps", type=_non_negative, default=None,
                       help="model swaps: the daemons follow a bundle registry whose current alternates "
                            "between the configured bundle and a relabelled copy (promote, rollback, ...)")
    chaos.set_defaults(command="chaos", handler=cmd_chaos)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def cmd_chaos(args: argparse.Namespace, config: Config) -> int:
    """Run the scenario, print a summary, write the JSON; 0 only for ALL-DELIVERED."""
    plan = (QUICK if args.quick else FULL).replace(
        seed=args.seed, duration_s=args.duration, devices=args.devices, daemons=args.daemons,
        kills=args.kills, terms=args.terms, outages=args.outages, swaps=args.swaps)
    if args.log_level != "DEBUG":
        # Outages make aiokafka log every refused connection; the verdict says what matters.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="streamer-chaos-"))
    console = Console()
    console.print(f"chaos: {plan.daemons} daemons, {plan.devices} devices, {plan.duration_s:g} s of traffic; "
                  f"logs in {workdir}")
    from streamer.lab.chaos.scenario import run_chaos  # Kafka clients only when the command runs

    result = asyncio.run(run_chaos(config, plan, workdir))
    table = Table(title=f"streamer chaos: {result['verdict']}", show_header=False)
    for key in SUMMARY_KEYS:
        table.add_row(key, str(result[key]))
    console.print(table)
    if result.get("registry_versions"):
        console.print(f"model swaps: {result['swaps']} injected, {result['model_swaps_seen']} seen by the "
                      f"daemons; alert model versions {result['alert_model_versions']} (registry: "
                      f"{', '.join(result['registry_versions'])})")
    for reason in result["reasons"]:
        console.print(f"  {reason}", style="red")
    if args.json is not None:
        write_json(args.json, result)
        console.print(f"result written to {args.json}")
    return 0 if result["verdict"] == "ALL-DELIVERED" else 1
