"""Retraining with a gate: a new bundle from recent readings, registered as ``candidate`` only if better.

1. Read the most recent readings of ``kafka.input_topic`` (``retrain.*`` bounds
   them), decoded as the daemon decodes them, and the alert and feedback
   topics over the same records bound.
2. Leave out every reading inside an alert episode or a reported anomaly
   (:mod:`streamer.lifecycle.exclusions`). What remains of a device falls
   into *segments*, runs of kept readings; each segment is a series of its
   own, so no training window spans a gap.
3. Split by time: readings after the cut (the last ``holdout_fraction`` of
   the time span) are held out. Training reads only readings before it; the
   held-out windows score the new bundle and ``current`` with the same
   metric (:func:`models.evaluation.holdout_mse`, each segment normalised
   from its start so earlier readings give context).
4. Gate: the new bundle is added to the registry and becomes ``candidate``
   only if its held-out error is below current's times ``1 - min_improvement``.
   Otherwise nothing in the registry changes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from models.bundle import ModelBundle
from models.evaluation import HeldOut
from streamer.codec import Alert, ReadingDecoder, Record, decode_alert
from streamer.config import Config
from streamer.feedback.messages import Feedback, parse_feedback
from streamer.lifecycle.exclusions import episodes, excluded, exclusion_windows

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

# Exit codes of `streamer retrain` (README: Retraining with a gate).
REGISTERED = 0
BAD_INPUT = 2
NOT_BETTER = 3
# Share of each training segment, at its end, that early stopping watches.
EARLY_STOP_FRACTION = 0.1


@dataclass(frozen=True)
class Readings:
    """Decoded readings, one row each, in the order read."""

    device_ids: npt.NDArray[np.str_]
    ts_ms: npt.NDArray[np.int64]
    values: FloatArray  # (rows, channels)

    def __len__(self) -> int:
        return len(self.ts_ms)

    def take(self, mask: npt.NDArray[np.bool_]) -> Readings:
        """The rows where ``mask`` is true."""
        return Readings(self.device_ids[mask], self.ts_ms[mask], self.values[mask])


def decode_readings(records: Sequence[Record], config: Config) -> tuple[Readings, Counter[str]]:
    """The valid readings of ``records`` (``readings.*`` rules) and the rejections by reason."""
    settings = config.readings
    decoder = ReadingDecoder(list(settings.channels), device_id_pattern=settings.device_id_pattern,
                             max_message_bytes=settings.max_message_bytes,
                             max_future_ms=settings.max_future_ms)
    decoded = decoder.decode(records)
    batch = decoded.readings
    values = np.asarray(batch.values, np.float64).reshape(len(batch.ts_ms), len(settings.channels))
    readings = Readings(np.asarray(batch.device_ids, dtype=str), np.asarray(batch.ts_ms, np.int64), values)
    finite: npt.NDArray[np.bool_] = np.asarray(np.isfinite(readings.values).all(axis=1))
    return readings.take(finite), Counter(rejection.reason for rejection in decoded.rejections)


def decode_alerts(records: Sequence[Record]) -> list[Alert]:
    """The alerts of ``records``; records that are not alerts are skipped (and counted in the log)."""
    alerts, skipped = [], 0
    for record in records:
        try:
            alerts.append(decode_alert(record.value or b""))
        except (msgspec.DecodeError, msgspec.ValidationError):
            skipped += 1
    if skipped:
        log.warning("skipped %d record(s) that are not alerts", skipped)
    return alerts


def decode_feedback(records: Sequence[Record], device_id_pattern: str) -> list[Feedback]:
    """The valid feedback messages of ``records`` (invalid ones are skipped, as the daemon does)."""
    pattern = re.compile(device_id_pattern)
    messages = [parsed for parsed in (parse_feedback(record, pattern) for record in records)
                if isinstance(parsed, Feedback)]
    if len(messages) < len(records):
        log.warning("skipped %d feedback record(s) that are not valid feedback", len(records) - len(messages))
    return messages


@dataclass(frozen=True)
class Prepared:
    """Training series and held-out series, cut at ``cutoff_ms``."""

    train: dict[str, FloatArray]  # "<device>#<segment>" -> (time, channels)
    holdout: list[HeldOut]
    cutoff_ms: int
    counts: dict[str, int] = field(default_factory=dict)


def prepare(readings: Readings, excluded_rows: npt.NDArray[np.bool_], *, holdout_fraction: float,
            min_series: int) -> Prepared:
    """Segments of kept readings, split by time into training and held-out series.

    Args:
        readings: Every reading read (excluded ones included: they mark the gaps).
        excluded_rows: Rows left out.
        holdout_fraction: The latest share of the kept readings' time span held out.
        min_series: Fewest readings a training series, or a held-out stretch, needs
            (a window plus one).

    >>> ids = np.array(["a"] * 10)
    >>> r = Readings(ids, np.arange(10) * 10, np.arange(10.0)[:, None])
    >>> out = prepare(r, np.isin(np.arange(10), [4]), holdout_fraction=0.3, min_series=2)
    >>> {k: v[:, 0].tolist() for k, v in out.train.items()}, [(h.start, len(h.values)) for h in out.holdout]
    ({'a#0': [0.0, 1.0, 2.0, 3.0], 'a#1': [5.0, 6.0]}, [(2, 5)])
    """
    kept_ts = readings.ts_ms[~excluded_rows]
    if not len(kept_ts):
        return Prepared({}, [], 0, {"train": 0, "holdout": 0, "short": 0})
    first, last = int(kept_ts.min()), int(kept_ts.max())
    cutoff = first + math.ceil((1.0 - holdout_fraction) * (last - first))
    names, codes = np.unique(readings.device_ids, return_inverse=True)
    order = np.lexsort((readings.ts_ms, codes))  # by device, then time (stable for equal times)
    sorted_codes, sorted_ts = codes[order], readings.ts_ms[order]
    sorted_values, sorted_kept = readings.values[order], ~excluded_rows[order]
    # A segment starts at each kept row whose predecessor (same device) is not kept.
    new_device = np.ones(len(order), dtype=bool)
    new_device[1:] = sorted_codes[1:] != sorted_codes[:-1]
    previous_kept = np.concatenate([[False], sorted_kept[:-1]]) & ~new_device
    starts = np.flatnonzero(sorted_kept & ~previous_kept)
    train: dict[str, FloatArray] = {}
    holdout: list[HeldOut] = []
    counts = {"train": 0, "holdout": 0, "short": 0}
    segment_of_device: Counter[int] = Counter()
    for start in starts.tolist():
        stop = start
        code = sorted_codes[start]
        while stop < len(order) and sorted_kept[stop] and sorted_codes[stop] == code:
            stop += 1
        values, ts = sorted_values[start:stop], sorted_ts[start:stop]
        name = f"{names[code]}#{segment_of_device[code]}"
        segment_of_device[code] += 1
        split = int(np.searchsorted(ts, cutoff, side="left"))
        if split >= min_series:
            train[name] = np.ascontiguousarray(values[:split])
            counts["train"] += split
        if len(values) - split >= min_series:
            holdout.append(HeldOut(np.ascontiguousarray(values), split))
            counts["holdout"] += len(values) - split
    # Kept readings in neither part: segments (or their halves) too short for a window.
    counts["short"] = len(kept_ts) - counts["train"] - counts["holdout"]
    return Prepared(train, holdout, cutoff, counts)


@dataclass(frozen=True)
class GateDecision:
    """Whether the new bundle is better than current by the margin, and why."""

    passed: bool
    improvement: float  # 1 - new / current (relative error reduction); NaN when undefined
    reason: str


def gate(new_mse: float, current_mse: float, min_improvement: float) -> GateDecision:
    """The gate: ``new_mse < current_mse * (1 - min_improvement)``.

    >>> gate(0.8, 1.0, 0.05).passed, gate(0.97, 1.0, 0.05).passed
    (True, False)
    >>> gate(float("nan"), 1.0, 0.05).reason
    'the new bundle has no finite held-out error'
    """
    if not math.isfinite(new_mse):
        return GateDecision(False, math.nan, "the new bundle has no finite held-out error")
    if not math.isfinite(current_mse) or current_mse <= 0.0:
        # current cannot be beaten by a relative margin (0 error) or was not measurable.
        return GateDecision(False, math.nan,
                            f"current's held-out error is {current_mse!r}: no margin to beat")
    improvement = 1.0 - new_mse / current_mse
    if new_mse < current_mse * (1.0 - min_improvement):
        return GateDecision(True, improvement, f"held-out error {new_mse:.4g} is {improvement:.1%} below "
                                               f"current's {current_mse:.4g} (needed {min_improvement:.1%})")
    return GateDecision(False, improvement, f"held-out error {new_mse:.4g} vs current's {current_mse:.4g}: "
                                            f"{improvement:.1%} better, needed {min_improvement:.1%}")


@dataclass(frozen=True)
class Gathered:
    """What was read from the topics."""

    readings: Readings
    alerts: list[Alert]
    feedback: list[Feedback]
    records: int
    rejected: Counter[str]


async def gather(config: Config) -> Gathered:
    """Read the recent readings, alerts and feedback (``retrain.max_readings_per_partition`` each).

    Raises:
        MissingTopicError: The input topic does not exist.
        BrokerError: The cluster is unreachable.
    """
    from streamer.lifecycle.topics import recent_records, recent_records_or_none

    kafka, bound = config.kafka, config.retrain.max_readings_per_partition
    records = await recent_records(kafka, kafka.input_topic, per_partition=bound)
    readings, rejected = decode_readings(records, config)
    alerts = decode_alerts(await recent_records_or_none(kafka, kafka.alert_topic, per_partition=bound))
    feedback = decode_feedback(await recent_records_or_none(kafka, kafka.feedback_topic, per_partition=bound),
                               config.readings.device_id_pattern)
    return Gathered(readings, alerts, feedback, len(records), rejected)


@dataclass
class Outcome:
    """The exit code and the JSON summary of a run."""

    exit_code: int
    summary: dict[str, Any]


def retrain(config: Config, gathered: Gathered, current: ModelBundle, *, registry: Any,
            now_ms: int | None = None, out: Path | None = None, verbose: int = 0) -> Outcome:
    """Train on ``gathered``, compare with ``current`` on the held-out slice, and register if better.

    Args:
        config: ``retrain.*`` and ``readings.channels``.
        gathered: Readings, alerts and feedback read from the topics.
        current: The bundle to beat (the registry's ``current``).
        registry: A :class:`models.registry.BundleRegistry`; changed only when the gate passes.
        now_ms: The time ``retrain.since_s`` counts back from (default: now).
        out: Also write the new bundle here (whatever the gate decides).
        verbose: Keras progress output.
    """
    settings = config.retrain
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    readings = gathered.readings
    summary: dict[str, Any] = {"current": current.version, "min_improvement": settings.min_improvement}
    counts: dict[str, int] = {"records": gathered.records, "rejected": sum(gathered.rejected.values())}
    if settings.since_s is not None:
        recent = readings.ts_ms >= now_ms - round(settings.since_s * 1000)
        counts["before_since"] = int((~recent).sum())
        readings = readings.take(recent)
    alert_episodes = episodes(gathered.alerts)
    windows = exclusion_windows(alert_episodes, gathered.feedback,
                                margin_ms=round(settings.episode_margin_s * 1000),
                                include_false_alarms=settings.include_false_alarms)
    mask, by_why = excluded(readings.device_ids, readings.ts_ms, windows)
    counts.update({"read": len(readings), "excluded_alert_episodes": by_why["alert"],
                   "excluded_missed": by_why["missed"]})
    summary["episodes"] = {"alert": len(alert_episodes), "left_out": sum(w.why == "alert" for w in windows),
                           "missed": sum(w.why == "missed" for w in windows)}
    summary["readings"] = counts

    metadata = current.metadata
    window = settings.window or metadata.window
    prepared = prepare(readings, mask, holdout_fraction=settings.holdout_fraction, min_series=window + 1)
    counts.update({"train": prepared.counts["train"], "holdout": prepared.counts["holdout"],
                   "in_short_segments": prepared.counts["short"]})
    summary["cutoff_ms"] = prepared.cutoff_ms
    usable = prepared.counts["train"] + prepared.counts["holdout"]
    if usable < settings.min_readings or not prepared.train or not prepared.holdout:
        reason = (f"{usable} usable reading(s) ({prepared.counts['train']} to train, "
                  f"{prepared.counts['holdout']} held out); retrain.min_readings is {settings.min_readings} "
                  f"and both parts need a series of at least window + 1 = {window + 1} readings")
        return Outcome(BAD_INPUT, {**summary, "decision": "too_little_data", "reason": reason})

    model, new_metadata = _train(config, prepared, current, window, verbose)
    from models.evaluation import holdout_mse
    from models.weights import ForecasterWeights

    new_mse = holdout_mse(new_metadata, ForecasterWeights.from_model(model), prepared.holdout)
    current_mse = holdout_mse(current.metadata, current.weights, prepared.holdout)
    decision = gate(new_mse, current_mse, settings.min_improvement)
    new_metadata = dataclasses.replace(new_metadata, validation={
        **new_metadata.validation, "holdout_mse": new_mse, "holdout_mse_current": current_mse})
    summary["holdout_mse"] = {"new": new_mse, "current": current_mse}
    summary["improvement"] = decision.improvement if math.isfinite(decision.improvement) else None
    summary["reason"] = decision.reason

    from models.bundle import save_bundle

    with tempfile.TemporaryDirectory(prefix="streamer-retrain-") as scratch:
        bundle = save_bundle(out if out is not None else Path(scratch) / "bundle", model, new_metadata)
        summary["version"] = bundle.version
        if out is not None:
            summary["out"] = str(out)
        if not decision.passed:
            log.info("not registered: %s", decision.reason)
            return Outcome(NOT_BETTER, {**summary, "decision": "not_better"})
        note = f"retrain: {decision.reason}"
        version = registry.add(bundle.path, note=note)
        previous = registry.shadow(version, note=note)
    log.info("registered %s as candidate: %s", version, decision.reason)
    return Outcome(REGISTERED, {**summary, "decision": "registered", "candidate": version,
                                "replaced_candidate": previous})


def _train(config: Config, prepared: Prepared, current: ModelBundle, window: int, verbose: int
           ) -> tuple[Any, Any]:
    """A model with current's shape (or the configured one), trained on the training series."""
    from models.tf_runtime import load_keras

    load_keras()  # before anything imports Keras: its start-up lines filtered
    from models.architecture import ArchitectureSpec
    from models.training import train

    settings, metadata = config.retrain, current.metadata
    architecture = ArchitectureSpec(channels=metadata.architecture.channels,
                                    units=settings.units or metadata.architecture.units,
                                    layers=settings.layers or metadata.architecture.layers,
                                    dropout=metadata.architecture.dropout)
    model, new_metadata = train(
        prepared.train, window=window, min_context=min(metadata.min_context, window),
        architecture=architecture, normalization=metadata.normalization, epochs=settings.epochs,
        batch_size=settings.batch_size, learning_rate=settings.learning_rate,
        val_fraction=EARLY_STOP_FRACTION, seed=settings.seed, max_sequences=settings.max_sequences,
        channels=metadata.channels, command="streamer retrain", verbose=verbose)
    training = {**new_metadata.training,
                "data": f"topic {config.kafka.input_topic} (recent, episodes left out)",
                "retrained_from": current.version, "holdout_cutoff_ms": prepared.cutoff_ms}
    return model, dataclasses.replace(new_metadata, training=training)
