"""One configuration of ``streamer bench model``, in its own interpreter.

``python -m streamer.lab.bench.model_worker --bundle DIR --mode stateful --backend numpy
--batch 512 --devices 100000 --seconds 3 --out record.json`` writes one record
(see :mod:`streamer.lab.bench.model`) as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from streamer.lab.bench.model import BACKENDS, MODES, BenchPoint, measure


def main(argv: Sequence[str] | None = None) -> int:
    """Measure one configuration and write its record."""
    parser = argparse.ArgumentParser(prog="python -m streamer.lab.bench.model_worker")
    parser.add_argument("--bundle", required=True, help="bundle directory, or 'default'")
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    record = measure(args.bundle, BenchPoint(args.mode, args.backend, args.batch, args.devices),
                     seconds=args.seconds)
    args.out.write_text(json.dumps(record) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
