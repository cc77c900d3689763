"""Offline reference of the streaming nonparametric dynamic threshold.

Hundman et al., "Detecting Spacecraft Anomalies Using LSTMs and Nonparametric
Dynamic Thresholding" (KDD 2018), section 3.2, for ONE device and ONE channel,
computed from whole arrays with plain loops, straight from the definition
below. It is written for reading, not speed, and exists so that the
vectorised streaming code (:mod:`streamer.thresholds.dynamic`) can be checked
decision by decision against it.

The definition (``h`` = window, ``b`` = error_buffer, ``p`` = prune_p):

1. Readings whose residual is not finite are skipped: they change nothing and
   are never flagged. Below, ``t`` counts the remaining readings from 0.
2. ``e_t = |r_t|``; ``es_0 = e_0``, ``es_t = a*e_t + (1-a)*es_(t-1)`` with
   ``a = 2/(smoothing_span+1)``, in float64. The value judged and kept in the
   history is ``x_t = float32(es_t)`` (clipped to the largest float32).
3. Reading ``t`` is an *evaluation point* when ``n = t+1 >= min_history`` and
   ``(n - min_history) % decision_interval == 0``.
4. At an evaluation point ``T`` the window is ``W = x[s..T]`` with
   ``s = max(0, T-h+1)``; ``mu``, ``sigma`` are its mean and (population)
   standard deviation in float64. Each *side* searches its own values:
   ``V = W`` (high side) and, when ``inverted``, ``V = 2*mu - W`` (low side,
   catching drops; same ``mu`` and ``sigma``). Per side:

   * Candidates ``z = z_min + g*z_step`` for ``g = 0, 1, ...`` while
     ``z <= z_max`` (1e-9 slack); ``eps = mu + z*sigma``.
   * ``e_a`` = the points with ``V > eps``. *Sequences*: ``e_a`` in time order,
     two consecutive members ``i < j`` belong to the same sequence iff
     ``j - i <= 2*b + 1`` (Telemanom pads each point by ``b`` readings on both
     sides; padded ranges that overlap or touch merge).
   * ``score = (dmu/mu + dsigma/sigma) / (|E_seq|**2 + |e_a|)`` with
     ``dmu = mu - mean(V without e_a)``, ``dsigma = sigma - std(V without e_a)``.
   * A candidate qualifies iff ``sigma > 0``, ``mu > 0``, ``|e_a| >= 1``,
     ``|E_seq| <= max_sequences`` and ``|e_a| < max_fraction*|W|``. The
     qualifying candidate with the highest score wins; ties go to the
     LARGEST z (Telemanom's ``>=``: the stricter threshold for the readings
     judged before the next evaluation). If none qualifies (including "no
     point above any candidate"): ``eps = mu + z_max*sigma`` (Telemanom uses
     12, one step above its grid; here the configured z_max).
   * Pruning at the chosen ``eps``: the peak of a sequence is its largest
     ``V``; the non-anomalous maximum ``nam`` is the largest ``V`` of the
     points that have no ``e_a`` point within ``b`` readings (Telemanom's
     buffered exclusion), or, if every point has, the largest ``V`` not in
     ``e_a``. ``L = peaks sorted descending + [nam]``;
     ``d_i = (L[i-1] - L[i]) / L[i-1]`` for ``i = 1..|E_seq|``. With ``i*``
     the LAST ``i`` where ``d_i >= p``, the sequences ``L[0..i*-1]`` stay
     anomalous and every lower one is reclassified as nominal (the paper:
     each sequence above the last significant drop is kept, the rest pruned).
     This is stored as one number, the *cut*:
     ``cut = min(C, low/(1-p))`` with ``C = L[i*-1]``, ``low = L[i*]``, or,
     when no drop is significant, ``C = inf``, ``low = L[0]``. A sequence is
     kept iff its peak ``>= cut``: for the window's own sequences that is the
     rule above; for a sequence that grows after the evaluation it is the
     paper's rule applied with the new peak inserted (a new peak ``x`` ends up
     above the last significant drop iff ``x >= low/(1-p)``).

5. Decision at reading ``t`` after the first evaluation, per side, using the
   latest evaluation ``T <= t`` (``T = t`` when ``t`` is an evaluation point,
   so that reading is judged by the fresh threshold): ``v_j = x_j`` (high) or
   ``2*mu_T - x_j`` (low). The points ``j`` in ``[s_T, t]`` with
   ``v_j > eps_T`` are grouped by the gap rule of 4; the side flags ``t`` iff
   ``v_t > eps_T`` and the peak of ``t``'s sequence (over its points in
   ``[s_T, t]``) is ``>= cut_T``. The reading is flagged iff a side flags it.
   Only the past is used: the decision is causal and immediate.
6. "An anomaly does not teach itself normal": every reading is kept in the
   history, flagged or not. The method needs the anomalous points in ``W``:
   the score of a candidate is precisely how much removing them shrinks the
   mean and standard deviation, and pruning compares their peaks with the
   nominal maximum. Their weight on ``mu``/``sigma`` is what the candidate
   search looks through. An excursion stops being anomalous only when it is
   no longer a minority: at ``max_fraction`` of the window, or more than
   ``max_sequences`` sequences (after about ``max_fraction*h`` readings of a
   sustained shift it has become the new normal, by design).
7. Score of a side in [0, 1]: flagged, ``1 - exp(-(v_t - eps)/sigma)/2``
   (``1`` if ``sigma == 0``), at least 0.5; not flagged,
   ``(1 - exp(-u))/2`` with ``u = max(v_t - mu, 0)/(eps - mu)`` (``0`` if
   ``eps <= mu``), kept strictly below 0.5. The reading's score is the max
   over sides; it is 0 before the first evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamer.config import DynamicThresholdConfig

Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

BELOW_HALF = math.nextafter(0.5, 0.0)
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Candidate:
    """One candidate threshold of the search."""

    z: float
    epsilon: float
    above: int  # |e_a|
    sequences: int  # |E_seq|
    score: float  # NaN when undefined (nothing above, or no spread)
    qualifies: bool


@dataclass(frozen=True)
class Selection:
    """The threshold a side's search settled on."""

    z: float
    epsilon: float
    fallback: bool  # no candidate qualified: epsilon = mu + z_max*sigma
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True)
class SideEvaluation:
    """Threshold and pruning cut of one side at one evaluation point."""

    epsilon: float
    cut: float
    selection: Selection
    sequences: list[list[int]]  # window indices of e_a, grouped
    kept: list[bool]  # per sequence, after pruning


@dataclass(frozen=True)
class WindowEvaluation:
    """Everything an evaluation point decides for the readings that follow."""

    mu: float
    sigma: float
    sides: tuple[SideEvaluation, ...]  # (high,) or (high, low)


@dataclass(frozen=True)
class ReferenceRun:
    """Per reading of one device and channel (NaN / False for skipped readings)."""

    smoothed: Float64Array  # x_t, the float32-rounded smoothed error
    evaluated: BoolArray  # reading is an evaluation point
    flagged: BoolArray
    flagged_sides: BoolArray  # (T, sides)
    score: Float64Array
    mu: Float64Array  # of the latest evaluation
    sigma: Float64Array
    epsilon: Float64Array  # (T, sides), in each side's own values
    cut: Float64Array  # (T, sides)


def z_grid(config: DynamicThresholdConfig) -> list[float]:
    """Candidate z values: z_min, z_min + z_step, ... up to z_max.

    >>> z_grid(DynamicThresholdConfig(z_min=2.5, z_max=4.0, z_step=0.5))
    [2.5, 3.0, 3.5, 4.0]
    """
    grid = []
    g = 0
    while config.z_min + g * config.z_step <= config.z_max + 1e-9:
        grid.append(config.z_min + g * config.z_step)
        g += 1
    return grid


def group_sequences(indices: list[int], error_buffer: int) -> list[list[int]]:
    """Group sorted indices: neighbours at most ``2*error_buffer + 1`` apart join.

    >>> group_sequences([3, 4, 10, 30], error_buffer=3)
    [[3, 4, 10], [30]]
    """
    groups: list[list[int]] = []
    for index in indices:
        if groups and index - groups[-1][-1] <= 2 * error_buffer + 1:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def score_candidate(
    values: Float64Array, mu: float, sigma: float, z: float, config: DynamicThresholdConfig
) -> Candidate:
    """Score the candidate ``eps = mu + z*sigma`` on one side's window values."""
    epsilon = mu + z * sigma
    above = np.flatnonzero(values > epsilon).tolist()
    rest = values[~(values > epsilon)]
    sequences = group_sequences(above, config.error_buffer)
    score = math.nan
    if above and sigma > 0 and mu > 0 and len(rest) > 0:
        delta_mu = mu - float(np.mean(rest))
        delta_sigma = sigma - float(np.std(rest))
        score = (delta_mu / mu + delta_sigma / sigma) / (len(sequences) ** 2 + len(above))
    qualifies = (
        not math.isnan(score)
        and len(sequences) <= config.max_sequences
        and len(above) < config.max_fraction * len(values)
    )
    return Candidate(z, epsilon, len(above), len(sequences), score, qualifies)


def select_epsilon(
    values: Float64Array, mu: float, sigma: float, config: DynamicThresholdConfig
) -> Selection:
    """Best-scoring qualifying candidate (ties: largest z), else ``mu + z_max*sigma``."""
    candidates = tuple(score_candidate(values, mu, sigma, z, config) for z in z_grid(config))
    best: Candidate | None = None
    for candidate in candidates:
        if candidate.qualifies and (best is None or candidate.score >= best.score):
            best = candidate
    if best is None:
        return Selection(config.z_max, mu + config.z_max * sigma, True, candidates)
    return Selection(best.z, best.epsilon, False, candidates)


def non_anomalous_max(values: Float64Array, above: list[int], error_buffer: int) -> float:
    """Largest value farther than ``error_buffer`` from every flagged index.

    Falls back to the largest unflagged value when every point is that close.

    >>> non_anomalous_max(np.array([1.0, 5.0, 9.0, 2.0, 0.5]), [2], error_buffer=1)
    1.0
    """
    far = np.ones(len(values), dtype=bool)
    for a in above:
        far[max(0, a - error_buffer):a + error_buffer + 1] = False
    if far.any():
        return float(values[far].max())
    unflagged = np.ones(len(values), dtype=bool)
    unflagged[above] = False
    return float(values[unflagged].max())


def prune(peaks: list[float], nominal_max: float, p: float) -> tuple[list[bool], float]:
    """Paper's pruning: keep the sequences above the last significant drop.

    Args:
        peaks: Peak of each sequence, in any order.
        nominal_max: The largest non-anomalous value, appended last.
        p: Minimum relative drop ``(L[i-1] - L[i]) / L[i-1]``.

    Returns:
        Whether each sequence is kept (in the order of ``peaks``), and the cut:
        a sequence is kept iff its peak is at least the cut.

    >>> prune([10.0, 5.0, 4.8], nominal_max=2.0, p=0.13)
    ([True, True, True], 2.2988505747126435)
    >>> prune([10.0, 9.5, 3.0], nominal_max=2.9, p=0.13)
    ([True, True, False], 3.4482758620689657)
    """
    ladder = [*sorted(peaks, reverse=True), nominal_max]
    last_drop = 0  # 0: no significant drop
    for i in range(1, len(ladder)):
        if (ladder[i - 1] - ladder[i]) / ladder[i - 1] >= p:
            last_drop = i
    if last_drop:
        lowest_kept, low = ladder[last_drop - 1], ladder[last_drop]
    else:
        lowest_kept, low = math.inf, ladder[0]
    kept_values = ladder[:last_drop]
    kept = [peak in kept_values for peak in peaks]
    return kept, min(lowest_kept, low / (1.0 - p))


def evaluate_window(window: Float64Array, config: DynamicThresholdConfig) -> WindowEvaluation:
    """Thresholds and cuts of both sides at one evaluation point."""
    values = np.asarray(window, dtype=np.float64)
    mu = float(np.mean(values))
    sigma = float(np.std(values))
    side_values = [values, 2.0 * mu - values] if config.inverted else [values]
    sides = []
    for v in side_values:
        selection = select_epsilon(v, mu, sigma, config)
        above = np.flatnonzero(v > selection.epsilon).tolist()
        sequences = group_sequences(above, config.error_buffer)
        peaks = [max(float(v[j]) for j in sequence) for sequence in sequences]
        nominal = non_anomalous_max(v, above, config.error_buffer)
        kept, cut = prune(peaks, nominal, config.prune_p)
        sides.append(SideEvaluation(selection.epsilon, cut, selection, sequences, kept))
    return WindowEvaluation(mu, sigma, tuple(sides))


def side_score(value: float, flagged: bool, mu: float, sigma: float, epsilon: float) -> float:
    """Score of one side (item 7 of the module docstring).

    >>> side_score(10.0, True, mu=1.0, sigma=1.0, epsilon=4.0) > 0.99
    True
    >>> side_score(4.0, False, mu=1.0, sigma=1.0, epsilon=4.0) < 0.5
    True
    """
    if flagged:
        score = 1.0 if sigma == 0 else 1.0 - 0.5 * math.exp(-(value - epsilon) / sigma)
        return max(score, 0.5)
    reach = epsilon - mu
    u = max(value - mu, 0.0) / reach if reach > 0 else 0.0
    return min(0.5 * (1.0 - math.exp(-u)), BELOW_HALF)


def run_reference(residual: Float64Array, config: DynamicThresholdConfig) -> ReferenceRun:
    """Decide every reading of one device and channel (module docstring, items 1-7)."""
    residual = np.asarray(residual, dtype=np.float64)
    total = len(residual)
    side_count = 2 if config.inverted else 1
    alpha = 2.0 / (config.smoothing_span + 1.0)
    w = 2 * config.error_buffer + 1
    run = ReferenceRun(
        smoothed=np.full(total, np.nan),
        evaluated=np.zeros(total, dtype=bool),
        flagged=np.zeros(total, dtype=bool),
        flagged_sides=np.zeros((total, side_count), dtype=bool),
        score=np.zeros(total),
        mu=np.full(total, np.nan),
        sigma=np.full(total, np.nan),
        epsilon=np.full((total, side_count), np.nan),
        cut=np.full((total, side_count), np.nan),
    )
    history: list[float] = []  # x_t of the valid readings
    smoothed = math.nan
    latest: WindowEvaluation | None = None
    window_start = 0
    for row in range(total):
        if not math.isfinite(residual[row]):
            continue
        error = abs(float(residual[row]))
        smoothed = error if not history else alpha * error + (1.0 - alpha) * smoothed
        x = float(np.float32(min(smoothed, FLOAT32_MAX)))
        history.append(x)
        run.smoothed[row] = x
        t = len(history) - 1
        n = t + 1
        if n >= config.min_history and (n - config.min_history) % config.decision_interval == 0:
            window_start = max(0, t - config.window + 1)
            latest = evaluate_window(np.array(history[window_start:]), config)
            run.evaluated[row] = True
        if latest is None:
            continue
        mu, sigma = latest.mu, latest.sigma
        run.mu[row], run.sigma[row] = mu, sigma
        best = 0.0
        for k, side in enumerate(latest.sides):
            span = np.array(history[window_start:])
            v = span if k == 0 else 2.0 * mu - span
            flagged = False
            if v[-1] > side.epsilon:
                # Walk back through t's sequence of points above epsilon.
                peak = float(v[-1])
                last = len(v) - 1
                for j in range(len(v) - 2, -1, -1):
                    if last - j > w:
                        break
                    if v[j] > side.epsilon:
                        peak = max(peak, float(v[j]))
                        last = j
                flagged = peak >= side.cut
            run.flagged_sides[row, k] = flagged
            run.epsilon[row, k] = side.epsilon
            run.cut[row, k] = side.cut
            best = max(best, side_score(float(v[-1]), flagged, mu, sigma, side.epsilon))
        run.flagged[row] = bool(run.flagged_sides[row].any())
        run.score[row] = best
    return run
