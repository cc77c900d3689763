"""The scoring step: one micro-batch of readings in, decisions and alerts out.

Runs on the daemon's scorer (the event loop or a scoring thread, never both:
``runtime.scoring``) and is free of Kafka, so evaluation and benchmarks drive
exactly the code the daemon runs.

A batch may hold several readings of one device (a burst). Readings are
grouped into *rounds*: round k holds the k-th reading of every device in the
batch, in arrival order. Each round is one vectorised call over distinct
devices, so per-device order is kept and the common case (one reading per
device per batch) is a single round.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from streamer.alerts.episodes import EpisodeTracker
from streamer.alerts.events import AlertSource, RoundChanges, build_alerts
from streamer.codec import Alert, ReadingBatch, Rejection
from streamer.config import Config
from streamer.errors import ConfigError
from streamer.feedback.adjustments import Applied, GateCounts, OperatorAdjustments
from streamer.feedback.messages import Feedback, FeedbackRejection, pattern_regex
from streamer.feedback.rules import RuleBook
from streamer.scoring.baseline import HoltPredictor
from streamer.scoring.predictor import Predictor
from streamer.scoring.shadow import ShadowRound, ShadowScorer
from streamer.state.extra_rows import ExtraRows
from streamer.state.registry import NO_SLOT, DeviceRegistry
from streamer.state.slot_table import SlotTable
from streamer.thresholds import Threshold, make_threshold
from streamer.thresholds.novelty import apply_novelty, make_novelty
from streamer.thresholds.record import GATED_METHODS, apply_record_gate, make_record_gate
from streamer.thresholds.result import ThresholdResult, scatter, take
from streamer.thresholds.stuck import apply_stuck, make_stuck
from streamer.vocabulary import SuppressionReason

if TYPE_CHECKING:
    from models.bundle import ModelBundle

log = logging.getLogger(__name__)
IndexArray = npt.NDArray[np.intp]

_DEVICE_LIMIT = "buffers.max_devices reached; new devices are not admitted"
_DUPLICATE = "same event time as the device's last accepted reading"
_OUT_OF_ORDER = "older than the device's last accepted reading"


@dataclass
class ScoreResult:
    """What scoring one batch decided."""

    scored: int = 0
    warmup: int = 0
    # Readings rejected while scoring (record_index as in the ReadingBatch).
    rejections: list[Rejection] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    model_seconds: float = 0.0
    decided_at: float = 0.0  # wall clock (s)
    # Per processed (not rejected) reading, for latency histograms.
    event_ts_ms: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    fetched_at: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0, np.float64))
    # Per-row anomaly score (NaN for rejected and warm-up rows); used by evaluation.
    scores: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0, np.float64))
    # Flags that raised no alert (operator mutes, feedback, rules), by reason.
    suppressed: dict[SuppressionReason, int] = field(default_factory=dict)
    # The candidate scored in shadow (None: none): its outcome and alerts (to the shadow alert topic).
    shadow: ShadowRound | None = None
    shadow_alerts: list[Alert] = field(default_factory=list)


def make_predictor(config: Config, table: SlotTable) -> Predictor:
    """The predictor the config names, with its state in ``table``.

    With ``predictor.lstm.registry`` set, the bundle is the registry's
    ``current`` (checked as a swapped-in one would be); else, or while the
    registry names no ``current`` yet, ``predictor.lstm.bundle``.
    """
    settings = config.predictor
    if settings.kind == "lstm":
        from models.bundle import BundleError, load_bundle
        from streamer.scoring.lstm import LSTMPredictor

        registered = (current_bundle(settings.lstm.registry, config.readings.channels)
                      if settings.lstm.registry is not None else None)
        if registered is not None:
            bundle = registered
        else:
            try:
                bundle = load_bundle(settings.lstm.bundle)
            except BundleError as exc:
                raise ConfigError("<config>", "predictor.lstm.bundle",
                                  f"{settings.lstm.bundle}: {exc}") from None
            if list(bundle.metadata.channels) != list(config.readings.channels):
                raise ConfigError("<config>", "predictor.lstm.bundle",
                                  f"{settings.lstm.bundle}: bundle channels {list(bundle.metadata.channels)} "
                                  f"differ from readings.channels {list(config.readings.channels)}")
        return LSTMPredictor(table, bundle, mode=settings.lstm.mode, backend=settings.lstm.backend)
    return HoltPredictor(table, len(config.readings.channels), settings.baseline)


def current_bundle(registry_path: str, channels: Sequence[str]) -> ModelBundle | None:
    """The registry's ``current`` bundle, loaded and checked (None: the registry names none yet).

    Raises:
        ConfigError: No registry directory, or a current version that cannot
            be used (named under ``predictor.lstm.registry`` with the reason).
    """
    from models.registry import BundleRegistry, RegistryError
    from streamer.scoring.bundle_checks import Refusal, load_checked

    def refuse(reason: str) -> ConfigError:
        return ConfigError("<config>", "predictor.lstm.registry", f"{registry_path}: {reason}")

    registry = BundleRegistry(registry_path)
    if not registry.root.is_dir():
        raise refuse("no such directory (create it with: streamer model add BUNDLE --promote)")
    try:
        version = registry.pointer("current")
        if version is None:
            log.warning("registry %s names no current version: running predictor.lstm.bundle until "
                        "one is promoted", registry_path)
            return None
        loaded = load_checked(registry.path_of(version), channels)
    except (OSError, RegistryError) as exc:
        raise refuse(str(exc)) from None
    if isinstance(loaded, Refusal):
        raise refuse(f"current {version}: {loaded.reason}: {loaded.detail}")
    if loaded.version != version:
        raise refuse(f"current names {version} but its bundle is {loaded.version}")
    return loaded


def version_key(version: str) -> int:
    """A model version as an int64 a slot-table field can hold.

    >>> version_key("lstm-902f8505e625") == version_key("lstm-902f8505e625") != version_key("lstm-0")
    True
    """
    return int.from_bytes(hashlib.sha256(version.encode()).digest()[:8], "little", signed=True)


def rebuild_from_rings(predictor: Predictor, registry: DeviceRegistry, slots: IndexArray,
                       source: Predictor | None = None) -> None:
    """Rebuild ``predictor``'s state of ``slots`` from the readings in their ring buffers.

    ``source``: the running model, whose state of the same devices the
    predictor may carry over (:meth:`Predictor.rebuild`).
    """
    if len(slots):
        rings = registry.rings
        predictor.rebuild(slots, rings.windows(slots).astype(np.float64), rings.filled(slots), source)


def rounds(slots: IndexArray) -> list[IndexArray]:
    """Split batch rows into rounds of distinct slots, keeping per-slot order.

    >>> [r.tolist() for r in rounds(np.array([5, 7, 5, 5, 7]))]
    [[0, 1], [2, 4], [3]]
    """
    n = len(slots)
    if n == 0:
        return []
    order = np.argsort(slots, kind="stable")
    sorted_slots = slots[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = sorted_slots[1:] != sorted_slots[:-1]
    if starts.all():
        return [np.arange(n)]
    positions = np.arange(n)
    group_start = np.maximum.accumulate(np.where(starts, positions, 0))
    rank = np.empty(n, dtype=np.intp)
    rank[order] = positions - group_start
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(1, int(rank.max()) + 1))
    return list(np.split(by_rank, bounds))


class ScoringPipeline:
    """Registry, predictor, threshold and alert episodes wired together."""

    def __init__(
        self,
        config: Config,
        *,
        predictor: Predictor | None = None,
    ) -> None:
        self.config = config
        self.channels = list(config.readings.channels)
        channel_count = len(self.channels)
        self.registry = DeviceRegistry(
            window=config.buffers.window,
            channels=channel_count,
            initial_devices=config.buffers.initial_devices,
            max_devices=config.buffers.max_devices,
        )
        table = self.registry.table
        self.predictor: Predictor = predictor or make_predictor(config, table)
        self.threshold: Threshold = make_threshold(table, channel_count, config.thresholds)
        # Per-device rules: the devices of a rule may be judged by another method or parameters.
        self.rules = RuleBook(config.rules, self.channels, config.thresholds)
        self.thresholds: list[Threshold] = [self.threshold]
        for settings in self.rules.threshold_settings[1:]:
            try:
                self.thresholds.append(make_threshold(table, channel_count, settings))
            except ValueError as exc:
                raise ConfigError("<config>", "rules",
                                  f"a rule's thresholds cannot share state: {exc}") from None
        methods = [settings.method for settings in self.rules.threshold_settings]
        self._gated_groups = np.array([method in GATED_METHODS for method in methods])
        if self.rules.active:
            self.registry.on_admit = self._admitted
        # The record gate holds back the method's flags on routine residuals (None: off).
        gated_method = "zscore" if self._gated_groups.any() else config.thresholds.method
        self.record_gate = make_record_gate(table, channel_count, gated_method, config.thresholds.record_gate)
        # Range novelty runs after whichever method is configured (None: off).
        self.novelty = make_novelty(table, channel_count, config.thresholds.range_novelty)
        # Stuck sensors, after both: a stuck reading is easy to forecast, so
        # only the readings themselves show it (None: off).
        self.stuck = make_stuck(table, channel_count, config.thresholds.stuck)
        self.episodes = EpisodeTracker(table, config.alerts)
        # Declared last: new_normal resets every field declared before.
        self.operators = OperatorAdjustments(table, self.channels, config.feedback, config.thresholds,
                                             self.rules)
        self.warmup = config.thresholds.warmup
        # A model being swapped in (streamer.scoring.model_swap): it reads every
        # reading the running one reads, from its own fields, until it replaces it.
        self.staged: Predictor | None = None
        # The registry's candidate scored in shadow (streamer.scoring.shadow).
        self.shadow: ShadowScorer | None = None
        # The version each device's current or last episode opened with, as a key of known_versions.
        self.registry.table.add_field("ep_model", (), np.int64, 0)
        self.known_versions: dict[int, str] = {}
        self.know_version(self.predictor.version)

    @property
    def _version_key(self) -> int:
        return version_key(self.predictor.version)

    def _answerable_versions(self) -> list[str]:
        """Versions an answered alert may name: the running one first, then those replaced or registered."""
        current = self.predictor.version
        return [current, *(version for version in self.known_versions.values() if version != current)]

    def know_version(self, version: str) -> None:
        """Let alerts of episodes opened by ``version`` name it (a model swapped in or out, a registry's)."""
        self.known_versions[version_key(version)] = version

    def extra_rows(self) -> ExtraRows | None:
        """The predictor's per-slot state outside the slot table, for snapshots."""
        return self.predictor.extra_rows()

    def model_fields(self) -> tuple[str, ...]:
        """The running predictor's slot-table fields (the model part of a snapshot row)."""
        return self.predictor.state_fields

    def rebuild_model(self, slots: npt.NDArray[np.intp]) -> None:
        """Rebuild the running predictor's state of ``slots`` from their ring buffers."""
        rebuild_from_rings(self.predictor, self.registry, slots)

    def restored(self, slots: npt.NDArray[np.intp]) -> None:
        """``slots`` were just written from snapshots: a model swapped in or shadowed rebuilds them too."""
        if self.staged is not None:
            rebuild_from_rings(self.staged, self.registry, slots, self.predictor)
        if self.shadow is not None:
            self.shadow.restored(slots)

    def state_identity(self) -> dict[str, str]:
        """What a state snapshot row's meaning depends on besides its layout."""
        return {"model_version": self.predictor.version, "threshold_method": self.threshold.method,
                "channels": ",".join(self.channels)}

    def _admitted(self, slots: npt.NDArray[np.intp], device_ids: list[str]) -> None:
        """New devices fall under the first configured rule their id matches."""
        self.registry.table["reg_rule"][slots] = self.rules.rule_of(device_ids)

    def apply_feedback(self, message: Feedback, partitions: frozenset[int] | None = None,
                       among: range | None = None) -> Applied | FeedbackRejection:
        """Apply one operator message to the devices it names (of ``partitions``, when given).

        A message for one device that this pipeline does not hold (in those
        partitions) is rejected as ``unknown_device``; a pattern message applies
        to the matching devices held, possibly none, among the slots ``among``
        (all of them when None: a caller that must bound the work passes a
        slice at a time).
        """
        registry = self.registry
        if message.device_pattern is not None:
            slots = self._matching(message.device_pattern, partitions, among)
        else:
            assert message.device_id is not None  # noqa: S101  # parse_feedback checked it
            slot = registry.slot(message.device_id)
            if slot is None or (partitions is not None
                                and int(registry.table["reg_partition"][slot]) not in partitions):
                return FeedbackRejection("unknown_device", f"no device {message.device_id[:64]!r} here")
            slots = np.array([slot], dtype=np.intp)
        seen, last_ts = registry.seen(slots), registry.last_ts(slots)
        rules = registry.table["reg_rule"][slots]
        changed: list[int] = []
        outcome: Applied | FeedbackRejection = Applied(0)
        versions = self._answerable_versions()
        for index, slot in enumerate(slots.tolist()):
            outcome = self.operators.apply(message, slot, registry.device_id(slot), versions,
                                           int(seen[index]), int(last_ts[index]), int(rules[index]))
            if isinstance(outcome, Applied):
                changed.append(slot)
                if outcome.episode_start is not None and self.shadow is not None:
                    outcome = dataclasses.replace(
                        outcome, candidate_flagged=self.shadow.flagged_since(slot, outcome.episode_start))
        if changed:
            registry.mark_changed(np.array(changed, dtype=np.intp))
        if message.device_pattern is not None:
            return Applied(len(changed))
        return outcome

    def _matching(self, pattern: str, partitions: frozenset[int] | None,
                  among: range | None) -> npt.NDArray[np.intp]:
        """Live slots of ``among`` (and of ``partitions``, if given) whose id matches the glob ``pattern``."""
        registry = self.registry
        start, stop = (0, registry.high_water) if among is None else (among.start, among.stop)
        stop = min(stop, registry.high_water)
        live = (registry.slots_of_partitions(partitions, start, stop) if partitions is not None
                else np.flatnonzero(registry.table["reg_live"][start:stop]) + start)
        match = pattern_regex(pattern).fullmatch
        ids = registry.device_ids(live)
        matching = [slot for slot, device_id in zip(live.tolist(), ids, strict=True) if match(device_id)]
        return np.array(matching, dtype=np.intp)

    def replay(self, batch: ReadingBatch, partitions: npt.NDArray[np.int32]) -> int:
        """Score replayed readings into the state; returns how many were applied (scored or warm-up)."""
        result = self.score(batch, partitions)
        return result.scored + result.warmup

    def score(self, batch: ReadingBatch, partitions: npt.NDArray[np.int32] | None = None) -> ScoreResult:
        """Score every reading of ``batch``; see the module docstring for ordering.

        ``partitions`` holds the input partition of each reading (None outside
        Kafka): a device seen for the first time belongs to its reading's
        partition, so its state moves with that partition.
        """
        result = ScoreResult()
        shadow = self.shadow
        if shadow is not None:
            result.shadow = ShadowRound()
        n = len(batch)
        result.scores = np.full(n, np.nan)
        if n == 0:
            result.decided_at = time.time()
            return result
        slots = self.registry.resolve(batch.device_ids, partitions)
        admitted = slots != NO_SLOT
        result.rejections.extend(
            Rejection(int(batch.record_index[row]), "device_limit", _DEVICE_LIMIT)
            for row in np.flatnonzero(~admitted).tolist()
        )
        processed = np.zeros(n, dtype=bool)
        rows = np.flatnonzero(admitted)
        changes: list[RoundChanges] = []
        for round_rows in rounds(slots[rows]):
            batch_rows = rows[round_rows]
            accepted = self._score_round(batch, slots, batch_rows, result, changes)
            processed[accepted] = True

        result.decided_at = time.time()
        result.event_ts_ms = batch.ts_ms[processed]
        result.fetched_at = batch.fetched_at[processed]
        if changes:
            source = AlertSource(self.channels, self.threshold.method, self.predictor.version)
            result.alerts = build_alerts(changes, batch, source, result.decided_at)
        if shadow is not None and result.shadow is not None and result.shadow.changes:
            source = AlertSource(self.channels, shadow.threshold.method, shadow.version)
            result.shadow_alerts = build_alerts(result.shadow.changes, batch, source, result.decided_at)
        return result

    def _score_round(
        self,
        batch: ReadingBatch,
        slots: IndexArray,
        batch_rows: IndexArray,
        result: ScoreResult,
        changes: list[RoundChanges],
    ) -> IndexArray:
        registry = self.registry
        round_slots = slots[batch_rows]
        ts = batch.ts_ms[batch_rows]
        last_ts = registry.last_ts(round_slots)
        stale = ts <= last_ts
        if stale.any():
            duplicates = (ts == last_ts)[stale].tolist()
            result.rejections.extend(
                Rejection(int(batch.record_index[row]), "duplicate_timestamp", _DUPLICATE)
                if duplicate else Rejection(int(batch.record_index[row]), "out_of_order", _OUT_OF_ORDER)
                for row, duplicate in zip(batch_rows[stale].tolist(), duplicates, strict=True)
            )
            keep = ~stale
            batch_rows, round_slots, ts = batch_rows[keep], round_slots[keep], ts[keep]
            if len(batch_rows) == 0:
                return batch_rows
        values = batch.values[batch_rows]
        operators = self.operators
        flags = operators.flags(round_slots)
        if flags.any():
            operators.due_renewals(round_slots, ts, flags, registry.seen(round_slots))

        started = time.perf_counter()
        forecast = self.predictor.forecast(round_slots)
        self.predictor.observe(round_slots, values)
        if self.staged is not None:
            self.staged.observe(round_slots, values)
        result.model_seconds += time.perf_counter() - started

        residual = values - forecast
        seen = registry.seen(round_slots)
        scored = (seen >= self.warmup) & np.isfinite(residual).all(axis=1)
        registry.accept(round_slots, ts, values)

        rule = registry.table["reg_rule"][round_slots] if self.rules.active else None
        group = self.rules.group[rule + 1] if rule is not None and len(self.thresholds) > 1 else None
        decision = self._judge(round_slots, residual, scored, values, group)
        if self.record_gate is not None:
            decision = self._record_gate(round_slots, residual, scored, decision, group)
        if self.novelty is not None:
            decision = apply_novelty(self.novelty, round_slots, values, scored, decision)
        if self.stuck is not None:
            decision = apply_stuck(self.stuck, round_slots, values, scored, decision)
        if self.shadow is not None and result.shadow is not None:
            self.shadow.score_round(round_slots, batch_rows, ts, values, decision, scored, result.shadow)
        if flags.any() or rule is not None:
            counts = GateCounts(result.suppressed)
            decision = operators.gate(round_slots, ts, seen, scored, decision, flags, counts, rule,
                                      self.episodes.is_open)
        episode = self.episodes.update(round_slots, ts, decision.anomalous, decision.score, scored)
        operators.track(round_slots, decision, episode, episode.open_now)
        scored_count = int(np.count_nonzero(scored))
        result.scored += scored_count
        result.warmup += len(batch_rows) - scored_count
        result.scores[batch_rows] = np.where(scored, decision.score, np.nan)
        if episode.opened.size:
            registry.table["ep_model"][round_slots[episode.opened]] = self._version_key
        if episode.opened.size or episode.updated.size or episode.resolved.size:
            methods = None if group is None else [self.thresholds[g].method for g in group.tolist()]
            changes.append(
                RoundChanges(batch_rows, decision, forecast, episode.opened, episode.updated,
                              episode.resolved, episode.episode_start, methods,
                              self._episode_versions(round_slots, episode.updated, episode.resolved))
            )
        return batch_rows

    def _episode_versions(self, slots: IndexArray, updated: IndexArray,
                          resolved: IndexArray) -> list[str] | None:
        """Per round row, the version each episode opened with (None: all the running model's)."""
        keys = self.registry.table["ep_model"][slots]
        carried = np.zeros(len(slots), dtype=bool)
        carried[updated] = True
        carried[resolved] = True
        carried &= keys != self._version_key
        if not carried.any():
            return None
        versions = [self.predictor.version] * len(slots)
        for row in np.flatnonzero(carried).tolist():
            # A version no longer known (opened before a restart, two swaps ago): the running one.
            versions[row] = self.known_versions.get(int(keys[row]), self.predictor.version)
        return versions

    def _judge(self, slots: npt.NDArray[np.intp], residual: npt.NDArray[np.float64],
               scored: npt.NDArray[np.bool_], values: npt.NDArray[np.float64],
               group: npt.NDArray[np.intp] | None) -> ThresholdResult:
        """Each row judged by its device's method: the configured one, or its rule's (``group``)."""
        if group is None or not group.any():
            return self.threshold.update(slots, residual, scored, values)
        parts = []
        for index in np.unique(group).tolist():
            rows = np.flatnonzero(group == index)
            parts.append((rows, self.thresholds[index].update(slots[rows], residual[rows], scored[rows],
                                                              values[rows])))
        return scatter(parts, len(slots), len(self.channels))

    def _record_gate(self, slots: npt.NDArray[np.intp], residual: npt.NDArray[np.float64],
                     scored: npt.NDArray[np.bool_], decision: ThresholdResult,
                     group: npt.NDArray[np.intp] | None) -> ThresholdResult:
        """The record gate over the rows whose method it gates (every row, without rules)."""
        assert self.record_gate is not None  # noqa: S101  # the caller checked
        # Without rule groups the gate exists only because the configured method is gated.
        gated = self._gated_groups[group] if group is not None else None
        if gated is None or gated.all():
            return apply_record_gate(self.record_gate, slots, residual, scored, decision,
                                     self.episodes.is_open(slots))
        rows = np.flatnonzero(gated)
        if not rows.size:
            return decision
        gated_part = apply_record_gate(self.record_gate, slots[rows], residual[rows], scored[rows],
                                       take(decision, rows), self.episodes.is_open(slots[rows]))
        rest = np.flatnonzero(~gated)
        return scatter([(rows, gated_part), (rest, take(decision, rest))], len(slots), len(self.channels))
