"""The ``streamer`` command line: run, simulate, demo, alertmanager, train, model, retrain."""

from __future__ import annotations

import argparse
import asyncio
import importlib
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
from streamer.errors import ConfigError, StreamerError
from streamer.feedback import command as feedback_command
from streamer.gc_tuning import tune_collector
from streamer.lifecycle import registry_command, retrain_command
from streamer.logs import configure_logging

log = logging.getLogger("streamer")

# Exit code after a second SIGTERM/SIGINT (128 + SIGINT), as shells report it.
FORCED_EXIT = 130

# The lab's commands (benchmarks, chaos, evaluation): command -> (module, parser
# registration function, one-line help). Their modules are imported only when
# their command is the one run, so `streamer run` loads none of the lab.
LAB_COMMANDS: dict[str, tuple[str, str, str]] = {
    "bench": ("streamer.lab.bench.command", "add_bench_parser", "measure throughput and memory"),
    "chaos": ("streamer.lab.chaos.command", "add_chaos_parser",
              "kill daemons and pause the broker under load; verify delivery"),
    "evaluate": ("streamer.lab.evaluation.command", "add_evaluate_parser",
                 "score labelled data through the production path"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamer`` console script."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in trained bundles
    if args.command is None:
        parser.print_help()
        return 2
    try:
        config = load_config(args.config)
    except StreamerError as exc:
        print(f"streamer: {exc}", file=sys.stderr)
        return 2
    level = args.log_level or ("WARNING" if args.command == "demo" else config.runtime.log_level)
    configure_logging(level, config.runtime.log_format)
    try:
        code: int = args.handler(args, config)
    except ConfigError as exc:
        # Found while building what the config names (a model bundle): the same one line and
        # exit code as any other configuration error, naming the file that was loaded.
        source = exc.source if exc.source != "<config>" else str(args.config or "<defaults>")
        print(f"streamer: {ConfigError(source, exc.key_path, exc.reason)}", file=sys.stderr)
        return 2
    except StreamerError as exc:
        log.error("%s", exc)  # noqa: TRY400  # the message names the problem; a traceback would bury it
        return 1
    except KeyboardInterrupt:
        return FORCED_EXIT
    return code


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The command line parser; the lab command named in ``argv`` (if any) is registered in full."""
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
    simulate.add_argument("--drift-at", type=int, default=None, metavar="STEP",
                          help="a new normal from this step on (a drift, not an anomaly: not in --truth)")
    simulate.add_argument("--drift-level", type=float, default=8.0,
                          help="with --drift-at: level change in noise standard deviations (default 8)")
    simulate.add_argument("--drift-share", type=float, default=0.5,
                          help="with --drift-at: share of the devices that drift (default 0.5)")
    simulate.add_argument("--drift-period", type=float, default=None,
                          help="with --drift-at: their seasonal period afterwards, in readings")
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
    _alertmanager_parser(sub, common)
    _model_parsers(sub, common)
    _export_parser(sub, common)
    feedback_command.register(sub, common)
    retrain_command.register(sub, common)
    _lab_parsers(sub, common, chosen=next((a for a in argv if not a.startswith("-")), None))
    return parser


def _lab_parsers(sub: Any, common: argparse.ArgumentParser, chosen: str | None) -> None:
    """Register the lab's commands: ``chosen`` in full, the others by name and help only."""
    for name, (module, register, summary) in LAB_COMMANDS.items():
        if name == chosen:
            getattr(importlib.import_module(module), register)(sub, common)
        else:
            sub.add_parser(name, help=summary, add_help=False)


def _model_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    train = sub.add_parser(
        "train", parents=[common], help="train the LSTM forecaster and write a model bundle",
        description="Train the LSTM forecaster on a CSV/Parquet file (columns timestamp, device, values), "
                    "a replayed Kafka topic, or the synthetic fleet without anomalies, and write a model "
                    "bundle.")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="training data, .csv or .parquet")
    source.add_argument("--synthetic", action="store_true",
                        help="train on the synthetic fleet (readings.channels, no anomalies)")
    source.add_argument("--topic", default=None,
                        help="replay this Kafka topic from its beginning (decoded as the daemon does)")
    train.add_argument("--bootstrap-servers", default=None,
                       help="with --topic: override kafka.bootstrap_servers")
    train.add_argument("--max-records", type=int, default=None,
                       help="with --topic: read at most this many records (default: the whole topic)")
    train.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    train.add_argument("--device-column", default="device_id",
                       help="device column (default device_id; absent: the file is one device)")
    train.add_argument("--value-columns", default=None,
                       help="comma-separated channel columns (default: every other numeric column)")
    train.add_argument("--timestamp-column", default="timestamp",
                       help="event time column: epoch ms or ISO-8601 (default timestamp)")
    train.add_argument("--devices", type=int, default=200, help="synthetic devices (default 200)")
    train.add_argument("--steps", type=int, default=3000, help="synthetic readings per device (default 3000)")
    train.add_argument("--fleet-seed", type=int, default=1,
                       help="synthetic fleet seed (default 1; the simulator's default 7 stays unseen)")
    train.add_argument("--window", type=int, default=32, help="steps per training sequence (default 32)")
    train.add_argument("--min-context", type=int, default=8,
                       help="readings of history before a step counts in the loss (default 8)")
    train.add_argument("--stride", type=int, default=None,
                       help="steps between sequence starts (default window/4)")
    train.add_argument("--units", type=int, default=32, help="LSTM units per layer (default 32)")
    train.add_argument("--layers", type=int, default=1, help="LSTM layers (default 1)")
    train.add_argument("--dropout", type=float, default=0.0, help="LSTM input dropout (default 0)")
    train.add_argument("--epochs", type=int, default=20, help="most epochs; early stopping (default 20)")
    train.add_argument("--batch-size", type=int, default=256, help="sequences per step (default 256)")
    train.add_argument("--learning-rate", type=float, default=1e-3, help="initial Adam rate (default 0.001)")
    train.add_argument("--val-fraction", type=float, default=0.1,
                       help="share of each device's readings, at its end, held out (default 0.1)")
    train.add_argument("--seed", type=int, default=7, help="training seed (default 7)")
    train.add_argument("--max-sequences", type=int, default=None,
                       help="most training sequences, a seeded random subset (default all)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(command="train", handler=_cmd_train)

    model = sub.add_parser("model", help="inspect model bundles; manage the bundle registry",
                           description="Model bundle commands: inspect a bundle; list, add, promote, "
                                       "roll back and shadow versions in the bundle registry.")
    model.set_defaults(command="model", handler=lambda args, config: _print_help(model), config=None,
                       log_level=None)
    model_sub = model.add_subparsers(title="commands", metavar="COMMAND")
    inspect = model_sub.add_parser("inspect", parents=[common], help="print a bundle's description as JSON",
                                   description="Print a model bundle's description (version, architecture, "
                                               "normalisation, training data, validation metrics) as JSON.")
    inspect.add_argument("bundle", help='bundle directory, or "default" for the shipped bundle')
    inspect.set_defaults(command="model inspect", handler=_cmd_model_inspect)
    registry_command.register(model_sub, common)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _cmd_train(args: argparse.Namespace, config: Config) -> int:
    from streamer.training_cli import train_command

    return train_command(args, config)


def _cmd_model_inspect(args: argparse.Namespace, config: Config) -> int:
    from streamer.training_cli import inspect_command

    return inspect_command(args, config)


def _export_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    export = sub.add_parser(
        "export", parents=[common], help="export a bundle's forecaster as TFLite or ONNX for edge nodes",
        description="Export the forecaster in window mode (normalised window -> forecast after its last "
                    "step), run it in its runtime, compare it with the Keras model, and write the file "
                    "plus a JSON report (<file>.json). Exits 1 if it differs by more than its tolerance.")
    export.add_argument("bundle", help='bundle directory, or "default" for the shipped bundle')
    export.add_argument("--format", choices=["tflite", "onnx"], required=True, help="file format")
    export.add_argument("--quantize", choices=["float32", "float16", "int8"], default="float32",
                        help="float32 (default); float16: float16 weights; int8: tflite full integer "
                             "(calibrated on standard-normal windows), onnx dynamic int8 (onnxruntime only)")
    export.add_argument("--out", type=Path, default=None,
                        help="file to write (default ./<bundle version>-<quantize>.<format>)")
    export.set_defaults(command="export", handler=_cmd_export)


def _cmd_export(args: argparse.Namespace, config: Config) -> int:
    from streamer.export_cli import export_command

    return export_command(args, config)


def _alertmanager_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    bridge = sub.add_parser(
        "alertmanager", parents=[common], help="post alert episodes to Prometheus Alertmanager",
        description="Consume kafka.alert_topic in a consumer group of its own and post each alert "
                    "episode to Alertmanager's v2 API: open/update fire, resolve resolves, firing "
                    "episodes are resent every resend interval. Offsets are committed once Alertmanager "
                    "accepted the alerts (README: Alertmanager). Flags override the alertmanager section.")
    bridge.add_argument("--url", default=None, help="Alertmanager base URL, e.g. http://alertmanager:9093 "
                                                    "(alertmanager.url)")
    bridge.add_argument("--group-id", default=None,
                        help="consumer group (alertmanager.group_id; default <kafka.group_id>-alertmanager)")
    bridge.add_argument("--resend-interval", type=float, default=None, dest="resend_interval_s",
                        help="seconds between re-posts of firing episodes (alertmanager.resend_interval_s)")
    bridge.add_argument("--dashboard-url", default=None,
                        help="dashboard link template with {device}, {channel}, {alert_id} "
                             "(alertmanager.dashboard_url)")
    bridge.add_argument("--metrics-port", type=int, default=None,
                        help="serve /metrics on this port (alertmanager.metrics_port)")
    bridge.set_defaults(command="alertmanager", handler=_cmd_alertmanager)


def _cmd_alertmanager(args: argparse.Namespace, config: Config) -> int:
    from streamer.alertmanager.command import serve, with_flags

    settings = with_flags(config.alertmanager, url=args.url, group_id=args.group_id,
                          resend_interval_s=args.resend_interval_s, dashboard_url=args.dashboard_url,
                          metrics_port=args.metrics_port)

    async def bridge() -> int:
        stop = asyncio.Event()
        install_signal_handlers(stop.set)
        return await serve(config, settings, stop)

    return asyncio.run(bridge())


def _fleet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=200, help="devices in the fleet (default 200)")
    parser.add_argument("--rate", type=float, default=10.0,
                        help="readings per second per device (default 10)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")


def _cmd_run(args: argparse.Namespace, config: Config) -> int:
    from streamer.runtime.application import Application

    async def serve() -> int:
        application = Application(config)
        # A process-wide choice, so here rather than in Application (tests run it in-process).
        tune_collector(config.runtime.gc_gen0_threshold)
        install_signal_handlers(application.request_stop)
        return await application.run()

    return asyncio.run(serve())


def install_signal_handlers(request_stop: Callable[[], None]) -> None:
    """On the running loop: the first SIGTERM/SIGINT calls ``request_stop``, a second exits at once."""
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
    try:
        spec = FleetSpec(devices=args.devices, rate_hz=args.rate, channels=tuple(config.readings.channels),
                         seed=args.seed, anomalies=args.anomalies, drift_at=args.drift_at,
                         drift_level=args.drift_level, drift_share=args.drift_share,
                         drift_period=args.drift_period)
    except ValueError as exc:
        print(f"streamer simulate: {exc}", file=sys.stderr)
        return 2

    async def produce() -> int:
        stop = asyncio.Event()
        install_signal_handlers(stop.set)
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
