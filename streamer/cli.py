"""The ``streamer`` command line: run, simulate, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from streamer import __version__
from streamer.config import Config, load_config
from streamer.errors import StreamerError

log = logging.getLogger("streamer")

# Exit code after a second SIGTERM/SIGINT (128 + SIGINT), as shells report it.
FORCED_EXIT = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamer`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        config = load_config(args.config)
    except StreamerError as exc:
        print(f"streamer: {exc}", file=sys.stderr)
        return 2
    level = args.log_level or ("WARNING" if args.command == "demo" else config.runtime.log_level)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.handler(args, config)
    except StreamerError as exc:
        log.error("%s", exc)  # noqa: TRY400  # the message names the problem; a traceback would bury it
        return 1
    except KeyboardInterrupt:
        return FORCED_EXIT
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Real-time anomaly detection for sensor fleets on Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    parser.set_defaults(command=None)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=None,
                        help="YAML config (default: built-in defaults, as documented in config.yaml); "
                             "STREAMER__SECTION__KEY environment variables override it")
    common.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None,
                        help="override runtime.log_level")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run the detector daemon",
                         description="Consume readings, score them and publish alerts until SIGTERM.")
    run.set_defaults(command="run", handler=_cmd_run)

    simulate = sub.add_parser("simulate", parents=[common], help="produce a synthetic sensor fleet",
                              description="Produce seasonal, noisy readings with injected anomalies "
                                          "to the input topic, and write the ground truth.")
    _fleet_arguments(simulate)
    simulate.add_argument("--bootstrap-servers", default=None, help="override kafka.bootstrap_servers")
    simulate.add_argument("--topic", default=None, help="override kafka.input_topic")
    simulate.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60)")
    simulate.add_argument("--anomalies", type=int, default=30, help="anomalies to inject (default 30)")
    simulate.add_argument("--truth", type=Path, default=None,
                          help="write the injected anomalies (device, kind, start, end) as JSON lines")
    simulate.set_defaults(command="simulate", handler=_cmd_simulate)

    demo = sub.add_parser("demo", parents=[common], help="broker + simulator + daemon, with a live view",
                          description="Start the embedded broker if none is reachable, run the "
                                      "simulator and the daemon together, show live figures and a summary.")
    _fleet_arguments(demo)
    demo.add_argument("--duration", type=float, default=60.0, help="seconds of simulated traffic")
    demo.add_argument("--anomalies", type=int, default=None,
                      help="anomalies to inject (default: about one per device per two minutes)")
    demo.add_argument("--summary-json", type=Path, default=None, help="write the summary as JSON here")
    demo.add_argument("--no-live", action="store_true", help="no live terminal view")
    demo.set_defaults(command="demo", handler=_cmd_demo)
    return parser


def _fleet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=200, help="devices in the fleet (default 200)")
    parser.add_argument("--rate", type=float, default=10.0,
                        help="readings per second per device (default 10)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")


def _cmd_run(args: argparse.Namespace, config: Config) -> int:
    from streamer.app import Daemon

    async def serve() -> int:
        daemon = Daemon(config)
        _install_signal_handlers(daemon.request_stop)
        return await daemon.run()

    return asyncio.run(serve())


def _install_signal_handlers(request_stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(FORCED_EXIT)
        request_stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


def _cmd_simulate(args: argparse.Namespace, config: Config) -> int:
    from streamer.kafka.clients import ensure_topics, make_producer
    from streamer.simulate import FleetSpec, simulate, write_truth

    kafka = msgspec.structs.replace(
        config.kafka,
        bootstrap_servers=args.bootstrap_servers or config.kafka.bootstrap_servers,
        input_topic=args.topic or config.kafka.input_topic,
    )
    spec = FleetSpec(devices=args.devices, rate_hz=args.rate, channels=tuple(config.readings.channels),
                     seed=args.seed, anomalies=args.anomalies)

    async def produce() -> int:
        stop = asyncio.Event()
        _install_signal_handlers(stop.set)
        await ensure_topics(kafka, [kafka.input_topic])
        producer = make_producer(kafka)
        await producer.start()
        try:
            stats = await simulate(producer, kafka.input_topic, spec, args.duration, stop=stop)
        finally:
            await producer.stop()
        if args.truth is not None:
            write_truth(args.truth, stats.truth)
        print(json.dumps({"readings_sent": stats.readings_sent, "anomalies": len(stats.truth),
                          "truth": str(args.truth) if args.truth else None}))
        return 0

    return asyncio.run(produce())


def _cmd_demo(args: argparse.Namespace, config: Config) -> int:
    from streamer.demo import DemoOptions, run_demo

    options = DemoOptions(duration_s=args.duration, devices=args.devices, rate_hz=args.rate,
                          anomalies=args.anomalies, seed=args.seed, live=not args.no_live)
    console = Console()
    summary = asyncio.run(run_demo(config, options, console))
    _print_summary(console, summary)
    if args.summary_json is not None:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        console.print(f"summary written to {args.summary_json}")
    return 0 if summary["daemon_exit_code"] == 0 else 1


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="streamer demo summary")
    table.add_column("kind")
    table.add_column("injected", justify="right")
    table.add_column("detected", justify="right")
    detected = summary["detected"]
    for kind, count in summary["injected"].items():
        table.add_row(kind, str(count), str(detected.get(kind, 0)))
    console.print(table)
    latency = summary["latency_ms"]
    console.print(
        f"readings sent {summary['readings_sent']:,}, scored {summary['readings_scored']:,}, "
        f"false alerts {summary['false_alerts']}, event→alert latency "
        f"p50 {latency['p50']} ms, p99 {latency['p99']} ms"
    )
