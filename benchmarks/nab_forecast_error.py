"""Forecast error of the LSTM's stateful mode against window mode on the NAB corpus.

Every NAB series is replayed through ``LSTMPredictor`` in both modes (numpy
backend), all series batched together as devices, and the one-step forecast
errors are compared on the readings where both modes forecast. Errors are
divided by each series' standard deviation so series of different
scales weigh alike; persistence (next = last) is reported as a reference.

Usage::

    python benchmarks/nab_forecast_error.py --data ../shared/datasets/nab --json benchmarks/nab-forecast-error.json
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import load_bundle
from streamer.scoring.lstm import LSTMPredictor
from streamer.state.slot_table import SlotTable


def read_corpus(data: Path) -> dict[str, np.ndarray]:
    """``{category/name.csv: values}`` for every series under ``data/data``."""
    series: dict[str, np.ndarray] = {}
    for path in sorted((data / "data").glob("*/*.csv")):
        with path.open(newline="") as handle:
            values = [float(row["value"]) for row in csv.DictReader(handle)]
        series[f"{path.parent.name}/{path.name}"] = np.asarray(values)
    return series


def replay(bundle_path: str, mode: str, series: list[np.ndarray]) -> np.ndarray:
    """One-step forecasts ``(max_len, n_series)`` (NaN where none), all series as devices."""
    bundle = load_bundle(bundle_path)
    table = SlotTable(len(series))
    predictor = LSTMPredictor(table, bundle, mode=mode, backend="numpy")  # type: ignore[arg-type]
    length = max(len(s) for s in series)
    forecasts = np.full((length, len(series)), np.nan)
    lengths = np.array([len(s) for s in series])
    padded = np.zeros((length, len(series)))
    for i, s in enumerate(series):
        padded[: len(s), i] = s
    for t in range(length):
        slots = np.flatnonzero(lengths > t)
        forecasts[t, slots] = predictor.forecast(slots)[:, 0]
        predictor.observe(slots, padded[t, slots][:, None])
    return forecasts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/nab"))
    parser.add_argument("--bundle", default="default")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/nab-forecast-error.json"))
    args = parser.parse_args()
    corpus = read_corpus(args.data)
    names = list(corpus)
    series = [corpus[name] for name in names]
    started = time.perf_counter()
    results = {mode: replay(args.bundle, mode, series) for mode in ("stateful", "window")}
    seconds = time.perf_counter() - started
    per_series: list[dict[str, Any]] = []
    for i, (name, values) in enumerate(zip(names, series, strict=True)):
        stateful = results["stateful"][: len(values), i]
        window = results["window"][: len(values), i]
        naive = np.concatenate([[np.nan], values[:-1]])
        both = np.isfinite(stateful) & np.isfinite(window) & np.isfinite(naive)
        scale = float(np.std(values)) or 1.0  # MAD is 0 on NAB's spiky count series
        row: dict[str, Any] = {"series": name, "readings": int(both.sum()), "scale_std": scale}
        for label, forecast in (("stateful", stateful), ("window", window), ("naive", naive)):
            row[f"{label}_mae"] = float(np.mean(np.abs(values[both] - forecast[both])) / scale)
        row["stateful_minus_window_mean_abs"] = float(np.mean(np.abs(stateful[both] - window[both])) / scale)
        per_series.append(row)
    summary = {
        key: float(np.mean([row[key] for row in per_series]))
        for key in ("stateful_mae", "window_mae", "naive_mae", "stateful_minus_window_mean_abs")
    }
    summary["stateful_over_window_mae"] = summary["stateful_mae"] / summary["window_mae"]
    bundle = load_bundle(args.bundle)
    document = {
        "bundle_version": bundle.version,
        "window": bundle.metadata.window,
        "series": len(per_series),
        "readings": int(sum(row["readings"] for row in per_series)),
        "seconds_both_modes": round(seconds, 1),
        "machine": f"{platform.machine()} {platform.system()} python {platform.python_version()}",
        "units": "mean absolute error / series standard deviation, averaged over series",
        "summary": summary,
        "per_series": per_series,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in document.items() if k != "per_series"}, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
