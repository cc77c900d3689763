"""Retraining on a drifted fleet: false alerts and detections with the shipped bundle vs the retrained one.

The simulated fleet (``streamer simulate``'s :class:`~streamer.simulate.Fleet`,
one reading per second per device) runs ``--steps`` steps. At ``--drift-at``
a share of the devices settles at a new level (``--drift-level`` noise
standard deviations; optionally a new seasonal period) that stays: a new
normal, not an anomaly. Anomalies are injected from shortly after the drift
to the end.

1. The whole fleet is scored with the shipped bundle through the daemon's
   own scoring path (:func:`streamer.lab.evaluation.replay.replay`:
   decoder, micro-batcher, :class:`~streamer.scoring.pipeline.ScoringPipeline`).
2. ``streamer retrain``'s own code (:func:`streamer.lifecycle.retrain.retrain`)
   trains on the readings of ``[--retrain-from, --promote-at)`` with the
   alert episodes of step 1 left out, and runs its gate against the shipped
   bundle in a real registry.
3. The fleet is scored again with the retrained bundle as the model.
4. Alerts opened in ``[--promote-at, end)`` (after the promotion, on
   post-drift data) are matched with the anomalies injected there
   (:func:`streamer.ground_truth.match`, 20 readings of grace as the demo):
   false alerts per hour and injected anomalies detected, for both bundles;
   and, for the shipped bundle, the same over ``[--drift-at, --promote-at)``
   (the drift's transition included).

Usage::

    python benchmarks/lifecycle/retrain_drift.py --seeds 1 2 3 --json benchmarks/lifecycle/retrain-drift.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from models.bundle import load_bundle
from models.registry import BundleRegistry
from streamer.codec import Alert
from streamer.config import Config, load_config
from streamer.ground_truth import match
from streamer.lab.bench.machine import machine_record
from streamer.lab.evaluation.replay import Series, replay
from streamer.lifecycle.retrain import Gathered, Readings, retrain
from streamer.simulate import Fleet, FleetSpec

STEP_MS = 1_000
GRACE_READINGS = 20


def simulate(args: argparse.Namespace, seed: int, start_ms: int) -> tuple[list[Series], list[Any], Fleet]:
    """The drifted fleet's readings (one series per device) and the injected anomalies."""
    spec = FleetSpec(devices=args.devices, seed=seed, anomalies=args.anomalies,
                     quiet_readings=args.drift_at + 100, drift_at=args.drift_at, drift_level=args.drift_level,
                     drift_share=args.drift_share, drift_period=args.drift_period)
    fleet = Fleet(spec, args.steps)
    values = np.stack([fleet.values(step) for step in range(args.steps)], axis=1)  # (devices, steps, 1)
    ts = start_ms + np.arange(args.steps, dtype=np.int64) * STEP_MS
    series = [Series(device, ts, values[i]) for i, device in enumerate(fleet.device_ids)]
    return series, fleet.truth(start_ms, STEP_MS), fleet


def score(config: Config, bundle: str, series: list[Series]) -> tuple[list[Alert], float]:
    """Every alert the daemon's scoring path raises on ``series`` with ``bundle``, and the seconds it took."""
    lstm = msgspec.structs.replace(config.predictor.lstm, bundle=bundle)
    scoring = msgspec.structs.replace(config, predictor=msgspec.structs.replace(config.predictor, lstm=lstm))
    result = replay(scoring, series)
    return result.alerts, result.seconds


def outcome(alerts: list[Alert], truth: list[Any], since_ms: int, end_ms: int, devices: int,
            drifted: set[str]) -> dict[str, Any]:
    """False alerts and detections of the alerts opened in ``[since_ms, end_ms)``."""
    window = [a for a in alerts if since_ms <= a.ts < end_ms]
    injected = [t for t in truth if since_ms <= t.start_ts < end_ms]
    report = match(injected, window, grace_ms=GRACE_READINGS * STEP_MS)
    hours = (end_ms - since_ms) / 3_600_000
    opens = [a for a in window if a.event == "open"]
    false_opens = [a for a in opens if not any(
        t.device_id == a.device_id and t.start_ts <= a.ts <= t.end_ts + GRACE_READINGS * STEP_MS
        for t in injected)]
    return {
        "alerts": report.alerts,
        "false_alerts": report.false_alerts,
        "false_alerts_per_hour": report.false_alerts / hours,
        "false_alerts_per_device_day": report.false_alerts / hours / devices * 24,
        "false_alerts_on_drifted_devices": sum(a.device_id in drifted for a in false_opens),
        "injected": sum(report.injected.values()),
        "detected": sum(report.detected.values()),
        "detected_by_kind": {kind: f"{report.detected.get(kind, 0)}/{count}"
                             for kind, count in sorted(report.injected.items())},
    }


def run_seed(args: argparse.Namespace, seed: int, config: Config, workdir: Path) -> dict[str, Any]:
    """Steps 1-4 of the module docstring for one seed."""
    start_ms = int(time.time() * 1000) - args.steps * STEP_MS  # the decoder refuses far-future readings
    series, truth, fleet = simulate(args, seed, start_ms)
    drifted = {fleet.device_ids[i] for i in np.flatnonzero(fleet.drifted)}
    shipped = load_bundle("default")
    alerts_before, seconds_before = score(config, "default", series)

    # Retraining sees what `streamer retrain` would read at --promote-at: the recent readings
    # and the alert topic (here: the shipped bundle's alerts up to then).
    retrain_from = start_ms + args.retrain_from * STEP_MS
    promote_ms = start_ms + args.promote_at * STEP_MS
    ids, ts, values = [], [], []
    for item in series:
        keep = (item.ts_ms >= retrain_from) & (item.ts_ms < promote_ms)
        ids.append(np.full(int(keep.sum()), item.device_id))
        ts.append(item.ts_ms[keep])
        values.append(item.values[keep])
    readings = Readings(np.concatenate(ids), np.concatenate(ts), np.concatenate(values))
    seen_alerts = [a for a in alerts_before if a.ts < promote_ms]
    gathered = Gathered(readings, seen_alerts, [], len(readings), Counter())
    registry = BundleRegistry(workdir / f"registry-{seed}")
    registry.promote(registry.add(shipped.path))
    retrain_config = msgspec.structs.replace(config, retrain=msgspec.structs.replace(
        config.retrain, epochs=args.epochs, seed=seed, max_sequences=args.max_sequences))
    started = time.monotonic()
    result = retrain(retrain_config, gathered, shipped, registry=registry, now_ms=promote_ms,
                     out=workdir / f"retrained-{seed}")
    train_seconds = time.monotonic() - started
    alerts_after, seconds_after = score(config, str(workdir / f"retrained-{seed}"), series)

    end_ms = start_ms + args.steps * STEP_MS
    return {
        "seed": seed,
        "retrain": {key: result.summary.get(key) for key in
                    ("decision", "reason", "holdout_mse", "improvement", "readings", "episodes", "version")},
        "retrain_exit_code": result.exit_code,
        "retrain_seconds": round(train_seconds, 1),
        # The shipped bundle between the drift and the promotion, transition included.
        "shipped_before_promotion": outcome(alerts_before, truth, start_ms + args.drift_at * STEP_MS,
                                            promote_ms, args.devices, drifted),
        "shipped": outcome(alerts_before, truth, promote_ms, end_ms, args.devices, drifted),
        "retrained": outcome(alerts_after, truth, promote_ms, end_ms, args.devices, drifted),
        "score_seconds": {"shipped": round(seconds_before, 1), "retrained": round(seconds_after, 1)},
    }


def spread(runs: list[dict[str, Any]], model: str, key: str) -> dict[str, float]:
    """Mean, min and max of one figure over the seeds."""
    values = [float(run[model][key]) for run in runs]
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def main() -> None:
    """Run the seeds, print the summary, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--devices", type=int, default=60)
    parser.add_argument("--steps", type=int, default=4_500)
    parser.add_argument("--drift-at", type=int, default=500)
    parser.add_argument("--drift-level", type=float, default=8.0)
    parser.add_argument("--drift-share", type=float, default=0.5)
    parser.add_argument("--drift-period", type=float, default=None)
    parser.add_argument("--retrain-from", type=int, default=500, help="first step retraining reads")
    parser.add_argument("--promote-at", type=int, default=2_500,
                        help="step from which the retrained bundle runs")
    parser.add_argument("--anomalies", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-sequences", type=int, default=30_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = load_config(None, environ={})
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="retrain-drift-") as scratch:
        runs = [run_seed(args, seed, config, Path(scratch)) for seed in args.seeds]
    result = {
        "command": "python benchmarks/lifecycle/retrain_drift.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k != "json" and v is not None),
        "setup": {k: v for k, v in vars(args).items() if k != "json"} | {
            "step_ms": STEP_MS, "grace_readings": GRACE_READINGS,
            "evaluated": "alerts opened in [promote_at, steps), anomalies injected there"},
        "runs": runs,
        "summary": {model: {key: spread(runs, model, key) for key in
                            ("false_alerts_per_hour", "false_alerts", "detected", "injected")}
                    for model in ("shipped_before_promotion", "shipped", "retrained")},
        "retrain_decisions": Counter(run["retrain"]["decision"] for run in runs),
        "seconds": round(time.monotonic() - started, 1),
        **machine_record(),
    }
    text = json.dumps(result, indent=2, default=str)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    print(json.dumps(result["summary"], indent=2))  # noqa: T201  # a benchmark script's result


if __name__ == "__main__":
    main()
