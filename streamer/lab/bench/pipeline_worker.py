"""One configuration of ``streamer bench pipeline``, in its own interpreter.

``python -m streamer.lab.bench.pipeline_worker --config config.json --mode stateful
--backend numpy --devices 100000 --seconds 3 --out record.json`` writes one
record (see :mod:`streamer.lab.bench.pipeline`) as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from streamer.config import load_config
from streamer.lab.bench.pipeline import BACKENDS, MODES, PipelinePoint, measure


def main(argv: Sequence[str] | None = None) -> int:
    """Measure one configuration and write its record."""
    parser = argparse.ArgumentParser(prog="python -m streamer.lab.bench.pipeline_worker")
    parser.add_argument("--config", type=Path, default=None, help="daemon config (YAML or JSON)")
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--shadow", type=float, default=0.0, help="share of devices a candidate scores")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    point = PipelinePoint(args.mode, args.backend, args.devices, args.shadow)
    record = measure(load_config(args.config), point, seconds=args.seconds)
    args.out.write_text(json.dumps(record) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
