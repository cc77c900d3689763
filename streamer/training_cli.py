"""The ``streamer train`` and ``streamer model inspect`` commands.

``cli.py`` only declares their arguments. TensorFlow is imported here, inside
the commands, so ``streamer run`` never pays for it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import shlex
import sys
import time
from typing import Any

import msgspec

from streamer.config import Config

log = logging.getLogger(__name__)

# Exit code for unusable input data or bundle, as for an invalid config.
BAD_INPUT = 2


def train_command(args: argparse.Namespace, config: Config) -> int:
    """Train a forecaster and write a bundle to ``args.out``; print its description."""
    from models.tf_runtime import load_keras

    # Before anything imports Keras: TensorFlow loads with its start-up lines filtered.
    load_keras()
    from models.architecture import ArchitectureSpec
    from models.bundle import save_bundle
    from models.data import from_arrays, load_table
    from models.training import train

    try:
        if args.synthetic:
            from streamer.training_data import synthetic_series

            channels = list(config.readings.channels)
            data = from_arrays(synthetic_series(args.devices, args.steps, seed=args.fleet_seed,
                                                channels=channels), channels)
            source = (f"synthetic fleet: {args.devices} devices x {args.steps} steps, "
                      f"seed {args.fleet_seed}, no anomalies")
        elif args.topic:
            from streamer.training_data import topic_readings

            kafka = msgspec.structs.replace(
                config.kafka, bootstrap_servers=args.bootstrap_servers or config.kafka.bootstrap_servers)
            data = asyncio.run(topic_readings(msgspec.structs.replace(config, kafka=kafka), args.topic,
                                              max_records=args.max_records))
            source = f"topic {args.topic}"
        else:
            value_columns = [c.strip() for c in args.value_columns.split(",")] if args.value_columns else None
            data = load_table(args.data, device_column=args.device_column, value_columns=value_columns,
                              timestamp_column=args.timestamp_column)
            source = str(args.data)
    except (OSError, ValueError) as exc:
        log.error("cannot read training data: %s", exc)  # noqa: TRY400  # the message says what is wrong
        return BAD_INPUT
    log.info("training on %s: %d devices, %d readings, channels %s", source, len(data.series), data.steps,
             ", ".join(data.channels))

    started = time.monotonic()
    try:
        architecture = ArchitectureSpec(channels=len(data.channels), units=args.units, layers=args.layers,
                                        dropout=args.dropout)
        model, metadata = train(
            data.series, window=args.window, min_context=args.min_context, architecture=architecture,
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
            val_fraction=args.val_fraction, seed=args.seed, max_sequences=args.max_sequences,
            stride=args.stride, channels=data.channels, command=command_line(args),
            verbose=_keras_verbosity(args.quiet),
        )
    except ValueError as exc:
        log.error("cannot train: %s", exc)  # noqa: TRY400  # the message says what is wrong
        return BAD_INPUT
    metadata = dataclasses.replace(metadata, training={**metadata.training, "data": source})
    bundle = save_bundle(args.out, model, metadata)
    log.info("bundle %s written to %s after %.0f s", bundle.version, args.out, time.monotonic() - started)
    _print_json(bundle.describe())
    return 0


def inspect_command(args: argparse.Namespace, config: Config) -> int:
    """Print a bundle's description (``"default"``: the shipped bundle) as JSON."""
    from models.bundle import load_bundle

    try:
        bundle = load_bundle(args.bundle)
    except (OSError, ValueError) as exc:
        log.error("cannot load bundle %s: %s", args.bundle, exc)  # noqa: TRY400  # the message says it all
        return BAD_INPUT
    _print_json(bundle.describe())
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The command as typed (``args.argv``), for the bundle's record.

    >>> command_line(argparse.Namespace(argv=["train", "--out", "a b"]))
    "streamer train --out 'a b'"
    """
    argv: list[str] = getattr(args, "argv", None) or sys.argv[1:]
    return shlex.join(["streamer", *argv])


def _keras_verbosity(quiet: bool) -> int:
    # Progress bars on a terminal; in a log (make, CI) one line per epoch,
    # since a redrawn bar would otherwise print every update.
    if quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def _print_json(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()

