"""NAB scoring: per-row weights, one threshold per profile, normalised corpus score.

The semantics are those of NAB v1.1's sweeper (``nab/sweeper.py``), which
both its optimiser and its scorer use:

* ``S(x) = 2 / (1 + exp(5x)) - 1``, and ``-1`` for ``x > 3``.
* Rows before the probationary length are never scored (they still belong to
  their windows, which keep their full width).
* A row ``i`` inside a window of rows ``[a, b]`` (width ``w = b - a + 1``) is
  worth ``tp * S(-(b - i + 1) / w) / S(-1)``: exactly ``tp`` on the left edge
  (NAB divides by ``S(-1) = 0.98661``, which is why the perfect detector
  scores ``tp`` per window), falling to ``tp * S(-1/w) / S(-1)`` on the right
  edge. Only the window's earliest detection counts; a window with none costs
  ``-fn``. A window wholly inside the probationary period is not scored.
* A row outside every window is worth ``fp * S((i - b) / (w - 1))`` against
  the closest window ``[a, b]`` before it, so a detection just after a window
  costs little and one three widths later costs the full ``fp``; with no
  window before it, it costs ``fp``. Each such detection counts.
* A row is a detection when its score is ``>= threshold``. One threshold per
  profile is chosen over the whole corpus to maximise the summed score; ties go
  to the highest threshold (NAB sweeps from the top and keeps the first best).
* Normalised score ``100 * (S - S_null) / (S_perfect - S_null)``: the null
  detector never fires, the perfect one fires on the first scored row of each
  window. Both are scored by the same code as the detector.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamer.lab.evaluation.nab import (
    PROBATION_PERCENT,
    RowWindow,
    Window,
    list_series,
    probationary_length,
    read_results,
    read_windows,
    window_rows,
)

log = logging.getLogger(__name__)

Float64Array = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]

# Past three window widths a false positive is as bad as one with no window
# before it (NAB clamps the sigmoid there).
_FAR_PAST_WINDOW = 3.0


@dataclass(frozen=True)
class Profile:
    """One NAB cost matrix (``config/profiles.json``)."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float
    tn_weight: float = 1.0  # in NAB's cost matrix, but no NAB score uses it


STANDARD = Profile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0)
REWARD_LOW_FP_RATE = Profile("reward_low_FP_rate", tp_weight=1.0, fp_weight=0.22, fn_weight=1.0)
REWARD_LOW_FN_RATE = Profile("reward_low_FN_rate", tp_weight=1.0, fp_weight=0.11, fn_weight=2.0)
PROFILES: tuple[Profile, ...] = (STANDARD, REWARD_LOW_FP_RATE, REWARD_LOW_FN_RATE)


def scaled_sigmoid(position: Float64Array) -> Float64Array:
    """NAB's ``2 / (1 + exp(5x)) - 1`` (``= -tanh(2.5x)``), clamped to -1 past ``x = 3``.

    >>> scaled_sigmoid(np.array([-1.0, -0.5, 0.0, 1.0, 3.5])).round(5).tolist()
    [0.98661, 0.84828, 0.0, -0.98661, -1.0]
    """
    # tanh never overflows where exp(5x) would; `+ 0.0` turns -0.0 into 0.0.
    result: Float64Array = np.where(position > _FAR_PAST_WINDOW, -1.0, -np.tanh(2.5 * position)) + 0.0
    return result


# The value at a window's left edge; in-window rewards are divided by it.
MAX_TP = float(scaled_sigmoid(np.array([-1.0]))[0])


def row_weights(n_rows: int, windows: Sequence[RowWindow], profile: Profile) -> Float64Array:
    """What a detection on each row would add to the score (NAB's sweep score).

    In-window rows hold the reward of a true positive there; other rows hold
    the (negative) cost of a false positive there.

    >>> row_weights(6, [(1, 3)], STANDARD).round(4).tolist()
    [-0.11, 1.0, 0.9437, 0.6915, -0.0933, -0.1085]
    """
    weights = np.full(n_rows, -profile.fp_weight, dtype=np.float64)
    for k, (first, last) in enumerate(windows):
        width = last - first + 1
        inside = np.arange(first, last + 1, dtype=np.float64)
        weights[first : last + 1] = (
            profile.tp_weight * scaled_sigmoid(-(last - inside + 1.0) / width) / MAX_TP
        )
        following = windows[k + 1][0] if k + 1 < len(windows) else n_rows
        after = np.arange(last + 1, following, dtype=np.float64)
        # NAB divides by zero after a one-row window; we give it no grace period.
        position = (after - last) / (width - 1) if width > 1 else np.full(after.shape, np.inf)
        weights[last + 1 : following] = profile.fp_weight * scaled_sigmoid(position)
    return weights


@dataclass(frozen=True, eq=False)
class ScoredFile:
    """A detector's scores for one series, with its windows as row ranges."""

    key: str
    scores: Float64Array  # one per row, higher = more anomalous
    windows: tuple[RowWindow, ...]  # inclusive row ranges, sorted, disjoint
    probationary: int  # rows [0, probationary) are not scored

    def __post_init__(self) -> None:
        n = self.scores.shape[0]
        if self.scores.ndim != 1:
            raise ValueError(f"{self.key}: scores must be one-dimensional")
        if bool(np.isnan(self.scores).any()):
            raise ValueError(f"{self.key}: scores contain NaN")
        if not 0 <= self.probationary <= n:
            raise ValueError(f"{self.key}: probationary {self.probationary} outside [0, {n}]")
        previous_last = -1
        for first, last in self.windows:
            if not previous_last < first <= last < n:
                raise ValueError(f"{self.key}: window rows [{first}, {last}] not sorted, disjoint, in range")
            previous_last = last

    @classmethod
    def from_timestamps(
        cls,
        key: str,
        timestamps: npt.NDArray[np.int64],
        scores: Float64Array,
        windows: Sequence[Window],
        probation_percent: float = PROBATION_PERCENT,
    ) -> ScoredFile:
        """Build from timestamps (epoch ms) and windows in the same unit."""
        if timestamps.shape != scores.shape:
            raise ValueError(f"{key}: {timestamps.shape[0]} timestamps but {scores.shape[0]} scores")
        return cls(
            key,
            np.asarray(scores, dtype=np.float64),
            tuple(window_rows(timestamps, windows)),
            probationary_length(timestamps.shape[0], probation_percent),
        )

    @property
    def scored_windows(self) -> tuple[RowWindow, ...]:
        """Windows with at least one row past the probationary period."""
        return tuple(w for w in self.windows if w[1] >= self.probationary)


@dataclass(frozen=True)
class FileScore:
    """Raw score of one file (or a corpus) at one threshold, with its counts."""

    raw: float
    tp: int  # windows with a detection
    fp: int  # detections outside every window (rows)
    fn: int  # windows without a detection

    def __add__(self, other: FileScore) -> FileScore:
        return FileScore(self.raw + other.raw, self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


def score_file(file: ScoredFile, profile: Profile, threshold: float) -> FileScore:
    """Score one file with detections at ``scores >= threshold``."""
    n = file.scores.shape[0]
    weights = row_weights(n, file.windows, profile)
    fired = file.scores >= threshold
    fired[: file.probationary] = False
    inside = np.zeros(n, dtype=np.bool_)
    raw, tp, fn = 0.0, 0, 0
    for first, last in file.windows:
        inside[first : last + 1] = True
        if last < file.probationary:
            continue
        hits = np.flatnonzero(fired[first : last + 1])
        if hits.size:
            raw += float(weights[first + hits[0]])
            tp += 1
        else:
            raw -= profile.fn_weight
            fn += 1
    false_positives = fired & ~inside
    raw += float(weights[false_positives].sum())
    return FileScore(raw, tp, int(false_positives.sum()), fn)


@dataclass(frozen=True)
class ThresholdSweep:
    """Corpus raw score at every distinct threshold, from the highest down."""

    thresholds: Float64Array  # thresholds[0] is +inf: nothing fires
    totals: Float64Array


def sweep_thresholds(files: Sequence[ScoredFile], profile: Profile) -> ThresholdSweep:
    """Corpus score at each distinct score value used as the threshold.

    One sort of every scored row, highest score first; lowering the threshold
    past a row adds its weight if it is a false positive, or raises its
    window's value to the row's weight if that beats the window's best so far.
    """
    scores: list[Float64Array] = []
    weights: list[Float64Array] = []
    groups: list[IndexArray] = []
    n_windows = 0
    for file in files:
        n = file.scores.shape[0]
        group = np.full(n, -1, dtype=np.intp)
        for first, last in file.scored_windows:
            group[first : last + 1] = n_windows
            n_windows += 1
        keep = slice(file.probationary, None)
        scores.append(file.scores[keep])
        weights.append(row_weights(n, file.windows, profile)[keep])
        groups.append(group[keep])
    base = -profile.fn_weight * n_windows
    if not scores or sum(s.shape[0] for s in scores) == 0:
        return ThresholdSweep(np.array([np.inf]), np.array([base]))

    score = np.concatenate(scores)
    order = np.argsort(-score, kind="stable")
    score, weight, group = score[order], np.concatenate(weights)[order], np.concatenate(groups)[order]

    delta = np.where(group < 0, weight, 0.0)
    in_window = np.flatnonzero(group >= 0)
    by_window = in_window[np.argsort(group[in_window], kind="stable")]
    bounds = np.searchsorted(group[by_window], np.arange(n_windows + 1))
    for k in range(n_windows):
        rows = by_window[bounds[k] : bounds[k + 1]]
        best = np.maximum.accumulate(np.concatenate(([-profile.fn_weight], weight[rows])))
        delta[rows] = np.diff(best)

    running = base + np.cumsum(delta)
    # A threshold admits every row with an equal score at once.
    last_of_value = np.flatnonzero(np.append(score[1:] != score[:-1], True))
    return ThresholdSweep(
        np.concatenate(([np.inf], score[last_of_value])),
        np.concatenate(([base], running[last_of_value])),
    )


def optimise_threshold(files: Sequence[ScoredFile], profile: Profile) -> float:
    """The threshold that maximises the corpus score (the highest one among ties)."""
    sweep = sweep_thresholds(files, profile)
    return float(sweep.thresholds[int(np.argmax(sweep.totals))])


def perfect_file(file: ScoredFile) -> ScoredFile:
    """The same file scored by a detector that fires on each window's first scored row."""
    scores = np.zeros_like(file.scores)
    for first, _ in file.scored_windows:
        scores[max(first, file.probationary)] = 1.0
    return ScoredFile(file.key, scores, file.windows, file.probationary)


def _score_all(files: Sequence[ScoredFile], profile: Profile, threshold: float) -> FileScore:
    total = FileScore(0.0, 0, 0, 0)
    for file in files:
        total += score_file(file, profile, threshold)
    return total


@dataclass(frozen=True)
class ProfileScore:
    """A detector's corpus result under one profile."""

    profile: Profile
    threshold: float  # +inf when never firing scores best
    raw: float
    null: float  # raw score of the detector that never fires
    perfect: float  # raw score of the detector that fires on every window's left edge
    normalised: float  # 100 * (raw - null) / (perfect - null)
    tp: int  # windows detected
    fp: int  # detections (rows) outside every window
    fn: int  # windows missed


@dataclass(frozen=True)
class CorpusScore:
    """A detector's corpus result under each profile, by profile name."""

    profiles: Mapping[str, ProfileScore]
    n_files: int
    n_windows: int  # windows with at least one scored row

    def __getitem__(self, profile: str) -> ProfileScore:
        return self.profiles[profile]

    def __iter__(self) -> Iterator[ProfileScore]:
        return iter(self.profiles.values())


def score_corpus(files: Sequence[ScoredFile], profiles: Sequence[Profile] = PROFILES) -> CorpusScore:
    """Optimise the threshold and score the corpus under each profile."""
    files = list(files)
    perfect_files = [perfect_file(f) for f in files]
    n_windows = sum(len(f.scored_windows) for f in files)
    results: dict[str, ProfileScore] = {}
    for profile in profiles:
        threshold = optimise_threshold(files, profile)
        ours = _score_all(files, profile, threshold)
        null = _score_all(files, profile, math.inf).raw
        perfect = _score_all(perfect_files, profile, 1.0).raw
        if not perfect > null:
            raise ValueError("the corpus has no scored window: the normalised score is undefined")
        normalised = 100.0 * (ours.raw - null) / (perfect - null)
        log.debug("%s: threshold %r, raw %.4f, normalised %.2f",
                  profile.name, threshold, ours.raw, normalised)
        results[profile.name] = ProfileScore(
            profile, threshold, ours.raw, null, perfect, normalised, ours.tp, ours.fp, ours.fn
        )
    return CorpusScore(results, len(files), n_windows)


def load_results_corpus(corpus_root: Path, results_dir: Path, detector: str) -> list[ScoredFile]:
    """Read ``detector``'s results for every series of the corpus at ``corpus_root``."""
    windows = read_windows(corpus_root)
    files = []
    for key in list_series(corpus_root):
        if key not in windows:
            raise ValueError(f"{key}: not in the windows file")
        results = read_results(results_dir, detector, key)
        files.append(ScoredFile.from_timestamps(key, results.series.timestamps, results.scores, windows[key]))
    return files


@dataclass(frozen=True)
class ScoreboardRow:
    """Normalised scores of one detector under the three NAB profiles."""

    detector: str
    standard: float
    reward_low_fp: float
    reward_low_fn: float


# NAB v1.1 results/final_results.json, as listed in the datasets README.
PUBLISHED_SCOREBOARD: tuple[ScoreboardRow, ...] = (
    ScoreboardRow("perfect", 100.0, 100.0, 100.0),
    ScoreboardRow("ARTime", 74.85, 65.15, 80.36),
    ScoreboardRow("Numenta HTM", 70.10, 63.12, 74.32),
    ScoreboardRow("CAD-OSE", 69.90, 66.98, 73.18),
    ScoreboardRow("earthgecko Skyline", 58.20, 46.20, 63.80),
    ScoreboardRow("KNN-CAD", 57.99, 43.41, 64.81),
    ScoreboardRow("Relative Entropy", 54.64, 47.60, 58.84),
    ScoreboardRow("Random Cut Forest", 51.72, 38.36, 59.75),
    ScoreboardRow("Twitter ADVec", 47.06, 33.61, 53.50),
    ScoreboardRow("Windowed Gaussian", 39.65, 20.87, 47.41),
    ScoreboardRow("Etsy Skyline", 35.69, 27.08, 44.48),
    ScoreboardRow("random", 16.83, 5.76, 25.88),
    ScoreboardRow("null", 0.0, 0.0, 0.0),
)


def published_scoreboard() -> tuple[ScoreboardRow, ...]:
    """The published NAB v1.1 scoreboard (normalised scores), best first."""
    return PUBLISHED_SCOREBOARD


def scoreboard_row(detector: str, score: CorpusScore) -> ScoreboardRow:
    """Our result as a scoreboard row; needs the three standard profiles."""
    return ScoreboardRow(
        detector,
        score[STANDARD.name].normalised,
        score[REWARD_LOW_FP_RATE.name].normalised,
        score[REWARD_LOW_FN_RATE.name].normalised,
    )


def format_scoreboard(
    ours: Mapping[str, CorpusScore], published: Sequence[ScoreboardRow] = PUBLISHED_SCOREBOARD
) -> str:
    """A text table of our detectors (marked ``*``) among the published ones, best standard first."""
    rows = [(row, False) for row in published] + [
        (scoreboard_row(name, score), True) for name, score in ours.items()
    ]
    rows.sort(key=lambda item: -item[0].standard)
    names = [("* " if mine else "  ") + row.detector for row, mine in rows]
    width = max(len("  detector"), *(len(n) for n in names))
    lines = [f"{'  detector':<{width}}  {'standard':>8}  {'low FP':>8}  {'low FN':>8}"]
    lines += [
        f"{name:<{width}}  {row.standard:8.2f}  {row.reward_low_fp:8.2f}  {row.reward_low_fn:8.2f}"
        for name, (row, _) in zip(names, rows, strict=True)
    ]
    return "\n".join(lines)
