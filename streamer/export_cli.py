"""The ``streamer export`` command: a bundle's forecaster as TFLite or ONNX, for edge nodes.

``cli.py`` only declares the arguments; TensorFlow and the ONNX packages are
imported here, inside the command.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from streamer.config import Config

log = logging.getLogger(__name__)

# Exit code for an unusable bundle or a missing optional package, as for an invalid config.
BAD_INPUT = 2
# Exit code when the exported file differs from the Keras model by more than its tolerance.
PARITY_FAILED = 1


def export_command(args: argparse.Namespace, config: Config) -> int:
    """Export ``args.bundle``; print the report (also written next to the file as JSON)."""
    from models.bundle import load_bundle
    from models.export import ExportUnavailableError, export_bundle
    from models.tf_runtime import load_keras

    try:
        bundle = load_bundle(args.bundle)
    except (OSError, ValueError) as exc:
        log.error("cannot load bundle %s: %s", args.bundle, exc)  # noqa: TRY400  # the message says it all
        return BAD_INPUT
    # Every export checks parity against the Keras model: load TensorFlow with
    # its start-up lines filtered before anything imports Keras.
    load_keras()
    try:
        report = export_bundle(bundle, args.format, args.quantize, args.out)
    except ExportUnavailableError as exc:
        log.error("%s", exc)  # noqa: TRY400  # a missing package, not a bug: no traceback
        return BAD_INPUT
    sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    sys.stdout.flush()
    if not report.within_tolerance:
        log.error("%s differs from the Keras model by up to %.3g, more than the %s tolerance %.3g",
                  report.path, report.max_abs_error, report.quantization, report.tolerance)
        return PARITY_FAILED
    return 0
