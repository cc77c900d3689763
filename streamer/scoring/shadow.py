"""A candidate model scored in shadow: the same readings as the running model, decisions to the side.

The registry's ``candidate`` gets its own forecaster, threshold, record
gate, range novelty, stuck check and alert episodes, in a transient scope of
the slot table (``shadow_*``: never snapshotted), and judges the readings of
a share of the devices (``predictor.lstm.shadow.fraction``, chosen by a hash
of the device id so every daemon of a group picks the same devices). Its
alerts go to ``kafka.shadow_alert_topic`` and its agreement with the running
model to metrics; nothing it decides reaches the alert topic or any
device's own state.

What it does not apply: per-device rules and operator adjustments (mutes,
false-alarm bars), which belong to the running model's alerts. Its
forecaster state is rebuilt from the ring buffers, a slice of devices at a
time between batches (as for a swap); a device's shadow threshold then
warms up over ``thresholds.warmup`` readings before it judges. After a
restart or a partition move the shadow starts again the same way.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from models.backends import LSTMBackend
from models.bundle import ModelBundle
from streamer.alerts.episodes import EpisodeTracker
from streamer.alerts.events import RoundChanges
from streamer.config import Config
from streamer.scoring.lstm import LSTMPredictor
from streamer.scoring.predictor import Predictor
from streamer.state.registry import DeviceRegistry
from streamer.thresholds import make_threshold
from streamer.thresholds.novelty import apply_novelty, make_novelty
from streamer.thresholds.record import apply_record_gate, make_record_gate
from streamer.thresholds.result import ThresholdResult
from streamer.thresholds.stuck import apply_stuck, make_stuck

IndexArray = npt.NDArray[np.intp]
SHADOW_SCOPE = "shadow_"
# Per-slot membership (the "member" field).
UNKNOWN, PENDING, ACTIVE, OUTSIDE = 0, 1, 2, 3


def in_shadow(device_ids: list[str], fraction: float) -> npt.NDArray[np.bool_]:
    """Whether each device is among the ``fraction`` the candidate scores (stable across daemons).

    >>> in_shadow(["a", "b", "c"], 1.0).tolist()
    [True, True, True]
    """
    if fraction >= 1.0:
        return np.ones(len(device_ids), dtype=bool)
    hashes = np.fromiter((zlib.crc32(device_id.encode()) for device_id in device_ids), np.uint64,
                         len(device_ids))
    inside: npt.NDArray[np.bool_] = hashes < np.uint64(fraction * 2**32)
    return inside


@dataclass
class ShadowRound:
    """What the candidate decided in one batch."""

    scored: int = 0
    # Readings either model flagged, by agreement: both, current_only, candidate_only.
    flags: dict[str, int] = field(default_factory=lambda: {"both": 0, "current_only": 0, "candidate_only": 0})
    changes: list[RoundChanges] = field(default_factory=list)


class ShadowScorer:
    """The candidate's own detector over a share of the devices (see the module docstring).

    Every method runs on the scorer, between batches or inside one.
    """

    def __init__(self, config: Config, registry: DeviceRegistry, bundle: ModelBundle,
                 running: Callable[[], Predictor], backend: LSTMBackend | None = None) -> None:
        """A candidate beside the running model.

        Args:
            config: The daemon's configuration.
            registry: The devices and their slot table.
            bundle: The candidate.
            running: The model running now (a rebuild carries its normalisation over).
            backend: Built beforehand off the scorer (:func:`~streamer.scoring.lstm.build_backend`).
        """
        self.running = running
        settings = config.predictor.lstm
        channels = len(config.readings.channels)
        self.registry = registry
        self.fraction = settings.shadow.fraction
        self.warmup = config.thresholds.warmup
        scope = self.scope = registry.table.scoped(SHADOW_SCOPE, transient=True)
        scope.add_field("member", (), np.int8, UNKNOWN)
        scope.add_field("seen", (), np.int64, 0)  # readings judged since its forecaster was rebuilt
        self.predictor = LSTMPredictor(scope, bundle, mode=settings.mode, backend=settings.backend,
                                       prepared=backend)
        thresholds = config.thresholds
        self.threshold = make_threshold(scope, channels, thresholds)
        self.record_gate = make_record_gate(scope, channels, thresholds.method, thresholds.record_gate)
        self.novelty = make_novelty(scope, channels, thresholds.range_novelty)
        self.stuck = make_stuck(scope, channels, thresholds.stuck)
        self.episodes = EpisodeTracker(scope, config.alerts)
        self.next_slot = 0
        self.scanned = False  # every device there was at the start rebuilt

    @property
    def version(self) -> str:
        """The candidate's version."""
        return self.predictor.version

    def stop(self) -> None:
        """Forget the candidate: its fields are freed."""
        self.scope.remove_fields(self.scope.fields)

    def rebuild_next(self, slots: int) -> bool:
        """Rebuild the member devices of the next ``slots`` slots; True once every slot in use is done."""
        start = self.next_slot
        stop = min(start + slots, self.registry.high_water)
        live = np.flatnonzero(self.registry.table["reg_live"][start:stop]).astype(np.intp) + start
        self._activate(live)
        self.next_slot = stop
        self.scanned = self.next_slot >= self.registry.high_water
        return self.scanned

    def restored(self, slots: IndexArray) -> None:
        """``slots`` were just written from snapshots: those already passed by the scan are rebuilt now."""
        self._activate(slots[slots < self.next_slot])

    def _activate(self, slots: IndexArray) -> None:
        members = slots[self._members(slots)]
        if members.size:
            rings = self.registry.rings
            self.predictor.rebuild(members, rings.windows(members).astype(np.float64), rings.filled(members),
                                   self.running())
            self.scope["member"][members] = ACTIVE
            self.scope["seen"][members] = 0
            self._reset_detector(members)

    def _reset_detector(self, slots: IndexArray) -> None:
        """Threshold, checks and episodes back to a new device's (the forecaster was just rebuilt)."""
        own = set(self.predictor.state_fields)
        names = [name for name in self.scope.fields
                 if name not in ("member", "seen") and self.scope.prefix + name not in own]
        self.scope.reset_fields(slots, names)

    def _members(self, slots: IndexArray) -> npt.NDArray[np.bool_]:
        """Whether each slot's device is scored in shadow (decided once per device)."""
        member = self.scope["member"]
        status = member[slots]
        unknown = status == UNKNOWN
        if unknown.any():
            fresh = slots[unknown]
            inside = in_shadow(self.registry.device_ids(fresh), self.fraction)
            # Behind the scan (or after it), an undecided device is new: nothing to rebuild.
            behind = (fresh < self.next_slot) | self.scanned
            status[unknown] = np.where(inside, np.where(behind, ACTIVE, PENDING), OUTSIDE)
            member[fresh] = status[unknown]
        is_member: npt.NDArray[np.bool_] = status != OUTSIDE
        return is_member

    def flagged_since(self, slot: int, start_ts: int) -> bool | None:
        """Whether the candidate had an episode open, or opened one since ``start_ts`` (None: not judged)."""
        if int(self.scope["member"][slot]) != ACTIVE:
            return None
        return bool(self.scope["ep_open"][slot]) or int(self.scope["ep_start_ts"][slot]) >= start_ts

    def score_round(self, slots: IndexArray, batch_rows: IndexArray, ts: npt.NDArray[np.int64],
                    values: npt.NDArray[np.float64], current: ThresholdResult,
                    current_scored: npt.NDArray[np.bool_], out: ShadowRound) -> None:
        """Judge one round of readings of the running model's batch.

        Args:
            slots: The round's distinct slots (already accepted by the running model).
            batch_rows: Their rows in the batch.
            ts: Event times.
            values: The readings.
            current: The running model's decisions (for agreement).
            current_scored: Rows the running model judged.
            out: Where this batch's shadow outcome accumulates.
        """
        rows = np.flatnonzero(self._members(slots))
        if not rows.size:
            return
        if rows.size < len(slots):  # (every device in, the common case: no copies)
            slots, batch_rows, ts, values = slots[rows], batch_rows[rows], ts[rows], values[rows]
        forecast = self.predictor.forecast(slots)
        self.predictor.observe(slots, values)  # pending devices too: a later rebuild overwrites them
        active = np.flatnonzero(self.scope["member"][slots] == ACTIVE)
        if not active.size:
            return
        if active.size < len(slots):
            slots, batch_rows, ts, values, forecast = (slots[active], batch_rows[active], ts[active],
                                                       values[active], forecast[active])
            rows = rows[active]
        residual = values - forecast
        seen = self.scope["seen"][slots]
        scored = (seen >= self.warmup) & np.isfinite(residual).all(axis=1)
        self.scope["seen"][slots] = seen + 1
        decision = self.threshold.update(slots, residual, scored, values)
        if self.record_gate is not None:
            decision = apply_record_gate(self.record_gate, slots, residual, scored, decision,
                                         self.episodes.is_open(slots))
        if self.novelty is not None:
            decision = apply_novelty(self.novelty, slots, values, scored, decision)
        if self.stuck is not None:
            decision = apply_stuck(self.stuck, slots, values, scored, decision)
        episode = self.episodes.update(slots, ts, decision.anomalous, decision.score, scored)
        both_scored = scored & current_scored[rows]
        mine = decision.anomalous & both_scored
        theirs = current.anomalous[rows] & both_scored
        out.scored += int(np.count_nonzero(scored))
        out.flags["both"] += int(np.count_nonzero(mine & theirs))
        out.flags["current_only"] += int(np.count_nonzero(theirs & ~mine))
        out.flags["candidate_only"] += int(np.count_nonzero(mine & ~theirs))
        if episode.opened.size or episode.updated.size or episode.resolved.size:
            out.changes.append(RoundChanges(batch_rows, decision, forecast, episode.opened, episode.updated,
                                            episode.resolved, episode.episode_start))
