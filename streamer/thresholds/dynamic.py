"""Nonparametric dynamic threshold (Hundman et al., KDD 2018), streaming and vectorised.

Per device and channel the absolute residual is smoothed by an EWMA, and the
smoothed errors of the last ``h`` readings choose their own threshold: the
candidate ``eps = mu + z*sigma`` whose removal of the points above it shrinks
the mean and standard deviation the most, per flagged point and squared
sequence. Sequences whose peak is not separated from the next lower peak (or
the highest nominal error) by a relative drop of ``prune_p`` are pruned.

The definition, item by item, is the module docstring of
:mod:`streamer.thresholds.dynamic_reference` (an offline, loop-based version
of the same thing that the tests compare with this one decision by
decision). In short (``b`` = error_buffer, ``p`` = prune_p):

* Every valid reading's smoothed error ``x_t = float32(es_t)`` enters a ring of
  the last ``h``, flagged ones too: an anomaly does not teach itself normal
  because the candidate score measures exactly how much removing the
  anomalous points shrinks mean and std, and pruning compares their peaks
  with the nominal maximum, so they must stay in the window. An excursion
  stops being anomalous only once it is no minority any more
  (``max_fraction`` of the window, or more than ``max_sequences`` sequences).
* A device re-evaluates at its readings ``n = min_history + k*decision_interval``
  (``n`` counts its valid readings). An evaluation searches the candidates on
  the high side (``W``) and, when ``inverted``, the low side (``2*mu - W``);
  ties go to the largest ``z``; no qualifying candidate gives
  ``mu + z_max*sigma``. Flagged points ``i < j`` of a side are in one sequence
  iff ``j - i <= 2*b + 1``.
* Pruning (paper, section 3.2): peaks sorted descending, then the largest
  nominal error (points with no flagged point within ``b``); every sequence
  above the LAST step whose relative drop is ``>= p`` stays anomalous, every
  sequence below it is reclassified as nominal (all of them when no step is
  significant). Stored as one *cut*: a
  sequence is kept iff its peak ``>= min(C, low/(1-p))`` (``C`` the lowest
  kept peak, ``low`` the value right below the last significant drop, or the
  highest peak and ``C = inf`` when no drop is significant).
* Each evaluation stores ``mu``, ``sigma``, per side ``eps`` and the cut, and
  the state of the window's last sequence (its peak and how many readings
  ago its last flagged point was). A reading is judged immediately against
  the latest evaluation (the fresh one when it triggers it): a side flags it
  iff its value exceeds ``eps`` and the peak of the sequence it belongs to
  (grown reading by reading) reaches the cut.
* Score per side: flagged ``1 - exp(-(v - eps)/sigma)/2`` (>= 0.5); otherwise
  ``(1 - exp(-u))/2 < 0.5`` with ``u`` the way from ``mu`` to ``eps`` covered.

Evaluations of the devices due in a round are batched: one sort-free pass
per side ranks every window point against the whole candidate grid, and
histograms over those ranks give, for all candidates at once, the count and
the mean/variance of the points left below, and the number of sequences (a
point starts a sequence under ``eps`` iff it is above ``eps`` and the largest
of the ``2b+1`` points before it is not). That is O(h + grid) per window and
side, with ``(rows, h)`` temporaries in chunks of ``_CHUNK_ROWS`` windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.ndimage import maximum_filter1d

from streamer.config import DynamicThresholdConfig, ThresholdsConfig
from streamer.state.slot_table import SlotTable
from streamer.thresholds.result import ThresholdResult

IndexArray = npt.NDArray[np.intp]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Int64Array = npt.NDArray[np.int64]

# Windows evaluated together: bounds the (rows, h) float64 temporaries
# (about 2 MB each at h = 2100) while amortising numpy's per-call overhead.
_CHUNK_ROWS = 128
_BELOW_HALF = float(np.nextafter(0.5, 0.0))
# Smoothed errors are kept as float32; larger values are clipped, not inf.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def z_grid(z_min: float, z_max: float, z_step: float) -> Float64Array:
    """Candidate z values ``z_min + g*z_step`` up to ``z_max`` (1e-9 slack).

    >>> z_grid(2.5, 4.0, 0.5).tolist()
    [2.5, 3.0, 3.5, 4.0]
    """
    count = int(np.floor((z_max - z_min) / z_step + 1e-9)) + 1
    grid = [z_min + g * z_step for g in range(count)]
    # Same arithmetic as the reference, and never past z_max.
    while grid and grid[-1] > z_max + 1e-9:
        grid.pop()
    return np.array(grid, dtype=np.float64)


@dataclass(frozen=True)
class Evaluation:
    """What evaluating a batch of windows stores (one row per window)."""

    mu: Float64Array  # (rows,)
    sigma: Float64Array  # (rows,)
    epsilon: Float64Array  # (rows, sides), each side in its own values
    cut: Float64Array  # (rows, sides)
    peak: Float64Array  # (rows, sides) peak of the window's last sequence
    since: Int64Array  # (rows, sides) readings since its last flagged point


def grid_rank(
    values: Float64Array, epsilon: Float64Array, magnitude: Float64Array | None = None
) -> npt.NDArray[np.intp]:
    """Per point, how many of its row's candidates it exceeds: ``#{g: eps[g] < v}``.

    The candidates ``epsilon`` (non-decreasing along each row) are evenly
    spaced up to rounding, so the rank is guessed from the point's position
    on that line; the guess is checked against ``epsilon`` itself wherever
    rounding could matter, so the result equals the exact comparisons.

    Args:
        values: ``(rows, points)``; ``-inf`` marks padding.
        epsilon: ``(rows, candidates)``.
        magnitude: Per row, a bound on the finite ``|values|`` (computed when
            not given).

    >>> grid_rank(np.array([[0.5, 2.0, 2.5, 9.0]]), np.array([[1.0, 2.0, 3.0]])).tolist()
    [[0, 1, 2, 3]]
    """
    g = epsilon.shape[1]
    if magnitude is None:
        magnitude = np.where(np.isfinite(values), np.abs(values), 0.0).max(axis=1)
    first, last = epsilon[:, :1], epsilon[:, -1:]
    unit = (last - first) / max(g - 1, 1)
    # Rounding moves the guess by ~1e-15 * magnitude / unit candidates, so it is
    # trusted only on rows whose candidates are well resolved at their scale,
    # and only away from a candidate.
    resolved = unit > 1e-6 * (magnitude[:, None] + np.abs(first) + np.abs(last))
    # Padding (-inf) gives -inf or NaN positions: rank 0, never doubtful.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        position = (values - first) * np.where(resolved, 1.0 / unit, 0.0)
        doubtful = np.abs(position - np.rint(position)) < 1e-6
    rank = np.fmin(np.fmax(np.ceil(position), 0.0), g).astype(np.intp)  # fmax: NaN -> 0
    flat_rows = unit[:, 0] == 0  # all candidates equal (sigma = 0): one comparison
    if flat_rows.any():
        rank[flat_rows] = np.where(values[flat_rows] > first[flat_rows], g, 0)
    doubtful |= ~resolved
    picked = np.flatnonzero(doubtful)
    if picked.size:
        value = values.ravel()[picked]
        guess = rank.ravel()[picked]
        base = (picked // values.shape[1]) * g
        flat = epsilon.ravel()
        for _ in range(g + 1):
            lower = flat[base + np.maximum(guess - 1, 0)]
            upper = flat[base + np.minimum(guess, g - 1)]
            up = (guess < g) & (upper < value)
            down = (guess > 0) & ~(lower < value)
            step = up.view(np.int8) - down.view(np.int8)
            if not step.any():
                break
            guess += step
        np.put(rank, picked, guess)
    return rank


def _trailing_any(flags: BoolArray, join: int) -> BoolArray:
    """Whether any of the ``join`` points before each point of a row is set."""
    trailing = maximum_filter1d(flags.view(np.uint8), size=join, axis=1, mode="constant", cval=0,
                                origin=join // 2)
    before = np.zeros_like(flags)
    before[:, 1:] = trailing[:, :-1].view(np.bool_)
    return before


def _select(
    values: Float64Array,
    magnitude: Float64Array,
    valid: BoolArray,
    mu: Float64Array,
    sigma: Float64Array,
    grid: Float64Array,
    settings: DynamicThresholdConfig,
) -> Float64Array:
    """The chosen epsilon of each row (best qualifying candidate, else z_max)."""
    rows, g = len(values), len(grid)
    bins = g + 1
    join = 2 * settings.error_buffer + 1
    n = valid.sum(axis=1)
    candidates = mu[:, None] + grid[None, :] * sigma[:, None]
    rank = grid_rank(values, candidates, magnitude)
    # Ranks are monotone in the value, so the rank of the largest of the
    # ``join`` points before a point is the largest of their ranks (0: none).
    rank_before = np.zeros_like(rank)
    rank_before[:, 1:] = maximum_filter1d(rank, size=join, axis=1, mode="constant", cval=0,
                                          origin=join // 2)[:, :-1]
    row_base = np.arange(rows)[:, None] * bins
    key = row_base + rank
    keys = key[valid]
    centred = (values - mu[:, None])[valid]
    size = rows * bins

    def cumulative(picked: IndexArray, weights: Float64Array | None = None) -> Float64Array:
        counts = np.bincount(picked, weights=weights, minlength=size).reshape(rows, bins)
        result: Float64Array = np.cumsum(counts, axis=1, dtype=np.float64)[:, :g]
        return result

    below = cumulative(keys)  # points at or below each candidate
    above = n[:, None] - below
    rest = np.maximum(below, 1.0)
    mean_shift = cumulative(keys, centred) / rest
    rest_var = np.maximum(cumulative(keys, centred * centred) / rest - mean_shift**2, 0.0)
    # A point starts a sequence under candidate g iff rank_before <= g < rank.
    starts = valid & (rank_before < rank)
    bounds = np.concatenate([(row_base + rank_before)[starts], key[starts]])
    signs = np.concatenate([np.ones(len(bounds) // 2), -np.ones(len(bounds) // 2)])
    sequences = cumulative(bounds, signs)

    ok = (sigma > 0) & (mu > 0)
    mu_safe = np.where(ok, mu, 1.0)[:, None]
    sigma_safe = np.where(ok, sigma, 1.0)[:, None]
    delta_mu = -mean_shift
    delta_sigma = sigma_safe - np.sqrt(rest_var)
    score = (delta_mu / mu_safe + delta_sigma / sigma_safe) / np.maximum(sequences**2 + above, 1.0)
    qualifies = (
        ok[:, None]
        & (above >= 1)
        & (sequences <= settings.max_sequences)
        & (above < settings.max_fraction * n[:, None])
    )
    ranked = np.where(qualifies, score, -np.inf)
    pick = g - 1 - np.argmax(ranked[:, ::-1], axis=1)  # ties: the largest z
    chosen = candidates[np.arange(rows), pick]
    epsilon: Float64Array = np.where(qualifies.any(axis=1), chosen, mu + settings.z_max * sigma)
    return epsilon


def _prune(
    values: Float64Array,
    valid: BoolArray,
    epsilon: Float64Array,
    settings: DynamicThresholdConfig,
) -> tuple[Float64Array, Float64Array, Int64Array]:
    """Cut, last-sequence peak and readings since its last point, per row."""
    rows, h = values.shape
    buffer = settings.error_buffer
    join = 2 * buffer + 1
    row_ids = np.arange(rows)
    above = valid & (values > epsilon[:, None])
    start = above & ~_trailing_any(above, join)

    flat = above.ravel()
    flat_values = values.ravel()[flat]
    flat_rows = np.flatnonzero(flat) // h
    heads = np.flatnonzero(start.ravel()[flat])  # each row's first point is a head
    peaks = np.maximum.reduceat(flat_values, heads) if heads.size else np.empty(0)
    peak_rows = flat_rows[heads]

    # Largest value with no flagged point within the buffer (else: largest unflagged).
    near = maximum_filter1d(above.view(np.uint8), size=join, axis=1, mode="constant", cval=0).view(np.bool_)
    far = valid & ~near
    nominal = np.where(
        far.any(axis=1),
        np.where(far, values, -np.inf).max(axis=1),
        np.where(valid & ~above, values, -np.inf).max(axis=1),
    )

    # The ladder: each row's peaks descending, its nominal maximum last.
    ladder = np.concatenate([peaks, nominal])
    ladder_rows = np.concatenate([peak_rows, row_ids])
    order = np.lexsort((-ladder, ladder_rows))
    steps, step_rows = ladder[order], ladder_rows[order]
    same_row = step_rows[1:] == step_rows[:-1]
    upper = np.where(same_row, steps[:-1], 1.0)
    significant = same_row & ((upper - steps[1:]) / upper >= settings.prune_p)
    drops = np.flatnonzero(significant)  # a drop between drops[k] and drops[k] + 1
    top = steps[np.searchsorted(step_rows, row_ids, side="left")]
    lowest_kept = np.full(rows, np.inf)
    low = top
    if drops.size:
        last = np.searchsorted(step_rows[drops], row_ids, side="right") - 1
        at = drops[np.maximum(last, 0)]
        has_drop = (last >= 0) & (step_rows[at] == row_ids)
        lowest_kept = np.where(has_drop, steps[at], np.inf)
        low = np.where(has_drop, steps[at + 1], top)
    cut: Float64Array = np.minimum(lowest_kept, low / (1.0 - settings.prune_p))

    # The window's last sequence, which the following readings may extend.
    any_above = above.any(axis=1)
    last_point = h - 1 - np.argmax(above[:, ::-1], axis=1)
    n = valid.sum(axis=1)
    since = np.minimum(np.where(any_above, n - 1 - last_point, join + 1), join + 1).astype(np.int64)
    peak: Float64Array = np.full(rows, -np.inf)
    if peaks.size:
        last_head = np.maximum(np.searchsorted(peak_rows, row_ids, side="right") - 1, 0)
        peak = np.where(any_above, peaks[last_head], -np.inf)
    return cut, peak, since


def evaluate_windows(
    windows: Float64Array, valid: BoolArray, settings: DynamicThresholdConfig, grid: Float64Array
) -> Evaluation:
    """Evaluate windows in time order (oldest first; ``valid`` marks the used prefix)."""
    n = valid.sum(axis=1)
    mu = np.where(valid, windows, 0.0).sum(axis=1) / n
    deviation = np.where(valid, windows - mu[:, None], 0.0)
    sigma = np.sqrt((deviation * deviation).sum(axis=1) / n)
    side_values = [windows]
    if settings.inverted:
        side_values.append(2.0 * mu[:, None] - windows)
    # Smoothed errors are >= 0: this bounds |x| and |2*mu - x| on the window.
    magnitude = np.where(valid, windows, 0.0).max(axis=1) + 2.0 * np.abs(mu)
    results = []
    for side in side_values:
        values = np.where(valid, side, -np.inf)
        epsilon = _select(values, magnitude, valid, mu, sigma, grid, settings)
        cut, peak, since = _prune(values, valid, epsilon, settings)
        results.append((epsilon, cut, peak, since))
    return Evaluation(
        mu=mu,
        sigma=sigma,
        epsilon=np.stack([r[0] for r in results], axis=1),
        cut=np.stack([r[1] for r in results], axis=1),
        peak=np.stack([r[2] for r in results], axis=1),
        since=np.stack([r[3] for r in results], axis=1),
    )


def side_scores(
    value: Float64Array, flagged: BoolArray, mu: Float64Array, sigma: Float64Array, epsilon: Float64Array
) -> Float64Array:
    """Score in [0, 1], at least 0.5 exactly when flagged (arrays broadcast).

    >>> side_scores(np.array([10.0, 4.0]), np.array([True, False]), np.array(1.0),
    ...             np.array(1.0), np.array(4.0)).round(3).tolist()
    [0.999, 0.316]
    """
    sigma_safe = np.where(sigma > 0, sigma, 1.0)
    excess = np.maximum(value - epsilon, 0.0)
    raised = np.where(sigma > 0, 1.0 - 0.5 * np.exp(-excess / sigma_safe), 1.0)
    reach = epsilon - mu
    covered = np.maximum(value - mu, 0.0) / np.where(reach > 0, reach, 1.0)
    calm = np.minimum(0.5 * (1.0 - np.exp(-np.where(reach > 0, covered, 0.0))), _BELOW_HALF)
    result: Float64Array = np.where(flagged, np.maximum(raised, 0.5), calm)
    return result


class DynamicThreshold:
    """Hundman et al.'s threshold per device and channel, vectorised over slots."""

    method = "dynamic"

    def __init__(self, table: SlotTable, channels: int, config: ThresholdsConfig) -> None:
        settings = config.dynamic
        self.table = table
        self.settings = settings
        self.channels = channels
        self.sides = 2 if settings.inverted else 1
        self.alpha = 2.0 / (settings.smoothing_span + 1.0)
        self.grid = z_grid(settings.z_min, settings.z_max, settings.z_step)
        self.join = 2 * settings.error_buffer + 1
        sides = (channels, self.sides)
        table.add_field("dyn_smoothed", (channels,), np.float64, np.nan)
        table.add_field("dyn_count", (), np.int64, 0)
        table.add_field("dyn_history", (channels, settings.window), np.float32, 0.0)
        table.add_field("dyn_mu", (channels,), np.float64, np.nan)
        table.add_field("dyn_sigma", (channels,), np.float64, np.nan)
        table.add_field("dyn_epsilon", sides, np.float64, np.inf)
        table.add_field("dyn_cut", sides, np.float64, np.inf)
        table.add_field("dyn_peak", sides, np.float64, -np.inf)
        table.add_field("dyn_since", sides, np.int64, self.join + 1)

    def update(self, slots: IndexArray, residual: Float64Array, scored: BoolArray,
               values: Float64Array | None = None) -> ThresholdResult:
        """Judge one residual per slot, re-evaluating the devices that are due.

        Args:
            slots: Distinct slots.
            residual: ``(n, channels)`` actual minus forecast; rows with a
                non-finite value are skipped (no forecast yet).
            scored: Rows past warm-up; only these can be flagged.
            values: The readings; unused (the method looks at residuals only).
        """
        table, settings = self.table, self.settings
        total = len(slots)
        valid = np.isfinite(residual).all(axis=1)
        score = np.zeros(total)
        flagged = np.zeros(total, dtype=bool)
        channel = np.zeros(total, dtype=np.intp)
        smoothed_out = np.full(total, np.nan)
        threshold = np.full(total, np.nan)
        # Each channel's score, with several channels (one channel: the row score itself).
        per_channel: Float64Array | None = None
        rows = np.flatnonzero(valid)
        if rows.size:
            device = slots[rows]
            error = np.abs(residual[rows])
            previous = table["dyn_smoothed"][device]
            smoothed = np.where(np.isnan(previous), error, self.alpha * error + (1.0 - self.alpha) * previous)
            table["dyn_smoothed"][device] = smoothed
            stored = np.minimum(smoothed, _FLOAT32_MAX).astype(np.float32)
            x = stored.astype(np.float64)
            count = table["dyn_count"][device] + 1
            table["dyn_count"][device] = count
            position = (count - 1) % settings.window
            channel_ids = np.arange(self.channels)[None, :]
            table["dyn_history"][device[:, None], channel_ids, position[:, None]] = stored

            live = count >= settings.min_history
            due = live & ((count - settings.min_history) % settings.decision_interval == 0)
            if due.any():
                self._evaluate(device[due], count[due])
            steady = live & ~due
            if steady.any():
                self._advance(device[steady], x[steady])
            smoothed_out[rows] = x[:, 0]
            if live.any():
                picked = rows[live]
                verdict = self._decide(device[live], x[live])
                flagged[picked], score[picked], channel[picked] = verdict[0], verdict[1], verdict[2]
                smoothed_out[picked] = x[live][np.arange(len(picked)), verdict[2]]
                threshold[picked] = verdict[3]
                if self.channels > 1:
                    per_channel = verdict[4]
                    if len(picked) < total:  # usually every row is live: no scatter
                        per_channel = np.zeros((total, self.channels))
                        per_channel[picked] = verdict[4]
        judged = scored & valid
        score = np.where(judged, score, 0.0)
        if self.channels == 1:
            channel_scores = score[:, None]  # a view: one channel's score is the row's
        elif per_channel is None:
            channel_scores = np.zeros((total, self.channels))  # nothing judged yet
        else:
            channel_scores = np.where(judged[:, None], per_channel, 0.0)
        return ThresholdResult(
            score=score,
            anomalous=judged & flagged,
            channel=channel,
            smoothed=smoothed_out,
            threshold=threshold,
            channel_scores=channel_scores,
        )

    def _side_values(self, x: Float64Array, mu: Float64Array) -> Float64Array:
        """``(devices, channels, sides)``: the smoothed error and, inverted, ``2*mu - x``."""
        if self.sides == 1:
            return x[:, :, None]
        return np.stack([x, 2.0 * mu - x], axis=2)

    def _evaluate(self, device: IndexArray, count: Int64Array) -> None:
        """Re-evaluate the windows of ``device`` (whose newest reading is stored)."""
        table, settings = self.table, self.settings
        h, channels = settings.window, self.channels
        per_chunk = max(1, _CHUNK_ROWS // channels)
        for first in range(0, len(device), per_chunk):
            part = device[first:first + per_chunk]
            part_count = count[first:first + per_chunk]
            rows = len(part) * channels
            length = np.repeat(np.minimum(part_count, h), channels)
            start = np.repeat((part_count - np.minimum(part_count, h)) % h, channels)
            ring = table["dyn_history"][part].reshape(rows, h)
            order = (start[:, None] + np.arange(h)[None, :]) % h
            windows = np.take_along_axis(ring, order, axis=1).astype(np.float64)
            valid = np.arange(h)[None, :] < length[:, None]
            result = evaluate_windows(windows, valid, settings, self.grid)
            shape = (len(part), channels)
            table["dyn_mu"][part] = result.mu.reshape(shape)
            table["dyn_sigma"][part] = result.sigma.reshape(shape)
            table["dyn_epsilon"][part] = result.epsilon.reshape(*shape, self.sides)
            table["dyn_cut"][part] = result.cut.reshape(*shape, self.sides)
            table["dyn_peak"][part] = result.peak.reshape(*shape, self.sides)
            table["dyn_since"][part] = result.since.reshape(*shape, self.sides)

    def _advance(self, device: IndexArray, x: Float64Array) -> None:
        """Extend each side's current sequence with the newest reading."""
        table = self.table
        value = self._side_values(x, table["dyn_mu"][device])
        above = value > table["dyn_epsilon"][device]
        since = table["dyn_since"][device]
        peak = table["dyn_peak"][device]
        joined = since + 1 <= self.join
        table["dyn_peak"][device] = np.where(above, np.where(joined, np.maximum(peak, value), value), peak)
        table["dyn_since"][device] = np.where(above, 0, np.minimum(since + 1, self.join + 1))

    def _decide(
        self, device: IndexArray, x: Float64Array
    ) -> tuple[BoolArray, Float64Array, IndexArray, Float64Array, Float64Array]:
        """Flag, score, worst channel, its bound (in smoothed-error units) and every channel's score."""
        table = self.table
        mu = table["dyn_mu"][device]
        sigma = table["dyn_sigma"][device]
        epsilon = table["dyn_epsilon"][device]
        value = self._side_values(x, mu)
        side_flag = (value > epsilon) & (table["dyn_peak"][device] >= table["dyn_cut"][device])
        scores = side_scores(value, side_flag, mu[:, :, None], sigma[:, :, None], epsilon)
        per_channel = scores.max(axis=2)
        worst = np.argmax(per_channel, axis=1)
        take = np.arange(len(device))
        side = np.argmax(scores[take, worst], axis=1)
        bound = epsilon[take, worst, side]
        # The low side's epsilon is on 2*mu - x; give the bound on x itself.
        bound = np.where(side == 1, 2.0 * mu[take, worst] - bound, bound)
        flagged: BoolArray = np.any(side_flag, axis=(1, 2))
        return flagged, per_channel[take, worst], worst, bound, per_channel
