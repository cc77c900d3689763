"""Anomaly likelihood of the forecast residual (after Ahmad et al., 2017).

Per device, one reading at a time, vectorised over the slots of a round:

1. *Raw score.* Each channel's residual is standardised by a causal,
   exponentially weighted mean and standard deviation learned from valid,
   scored, unflagged readings only, and mapped to ``erf(|z| / sqrt(2))``,
   the probability that Gaussian noise comes closer to the mean. The worst
   channel is taken and raised to the number of channels (Šidák), so that
   under independent Gaussian noise the raw score is Uniform(0, 1) for any
   channel count (see :func:`raw_score`).
2. *Short average.* ``mavg`` is the mean of the last ``short_window`` raw
   scores (a running sum over a small ring).
3. *Estimate.* A normal distribution is fitted to the short averages of the
   recent readings: with ``estimator="exponential"`` (the default) their
   exponentially weighted mean and variance of span ``history`` (two floats
   per device); with ``estimator="window"`` the exact mean and variance of
   the last ``history`` of them (exact integer running sums over a ring of
   averages quantised to 16 bits, ``2 * history`` bytes per device). Both
   score alike on NAB; the window forgets an old outlier at once after
   ``history`` readings, the exponential weights let it fade. The fit is
   refitted every ``reestimation_period`` readings and held fixed in
   between. Until a device has ``learning_period`` raw scores there is no
   estimate and the likelihood is 0.5.
4. *Likelihood* ``= Phi((mavg - mean) / std)``: one minus the Gaussian upper
   tail. Only the upper tail matters: raw scores are "bigger is worse".
5. *Decision.* A reading is anomalous when its likelihood is at or above
   ``threshold`` (the red line). An anomaly does not teach itself normal.
   Since the short average needs a few readings to rise, the readings that
   start an anomaly are still unflagged; so learning is held back until
   every short average that can see a reading has been judged. A residual
   updates the residual statistics ``short_window - 1`` readings late, and
   only when neither it nor any later reading up to then was flagged. A
   short average enters the history ``short_window - 1`` readings late, and
   only when ``2 * short_window - 1`` consecutive unflagged readings surround
   it (its own window and the readings that could still expose it). Flagged
   readings, the averages that contain them, and the onset of an anomaly
   that is caught within ``short_window`` readings never reach the estimate.
6. *Suppression* (Numenta's red-zone filter). When the previous reading of
   the device was already red, a red reading keeps ``anomalous=True`` (the
   episode tracker reads it as "the episode continues") but its ``score`` is
   lowered to the yellow level ``1 - sqrt(1 - threshold)`` (0.99 for
   0.9999), below the red line. So one anomaly yields one red *score* while
   the *decision* stays true for as long as it lasts. With
   ``quiet_period > 0`` a red reading within that many raw scores of the
   last red reported as red is lowered the same way (and stays flagged):
   a drifting device whose raw score keeps crossing the line then shows one
   red score per quiet period, not one per crossing.

Range novelty (a reading beyond its device's recent range) is applied by
the pipeline after any method: see :mod:`streamer.thresholds.novelty`.

Rows with a NaN residual (no forecast yet) leave every field untouched.
Rows that are not ``scored`` (pipeline warm-up) are never flagged and teach
nothing: residuals of an immature forecaster would inflate the scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import erf, ndtr, ndtri

from streamer.config import LikelihoodConfig, ThresholdsConfig
from streamer.state.slot_table import SlotTable
from streamer.thresholds.pattern import PatternNovelty
from streamer.thresholds.result import ThresholdResult

IndexArray = npt.NDArray[np.intp]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_SQRT2 = math.sqrt(2.0)
# Readings that only teach the residual scale before raw scores are made:
# with fewer samples the standardised residual is Student-t rather than
# normal and its raw scores run high, which would bias the first estimate.
# At 30 samples the t quantiles are within a few percent of the normal ones.
MIN_RESIDUAL_SAMPLES = 30
# The likelihood while there is no estimate: no evidence either way.
NEUTRAL = 0.5
# Kept averages are stored as round(mavg * QUANTUM) in uint16: half the
# memory of float32 (the ring is most of a device's state), a resolution of
# 1.5e-5, well below any useful min_std, and integer running sums that stay
# exact forever (history * QUANTUM**2 < 2**63).
QUANTUM = 65535


def raw_score(z: Float64Array) -> tuple[Float64Array, npt.NDArray[np.intp]]:
    """Raw anomaly score in [0, 1] of standardised residuals ``z`` (n, channels).

    ``erf(|z| / sqrt(2))`` is the probability integral transform of ``|z|``
    for Gaussian noise: Uniform(0, 1) when the residual is noise, so the short
    average of raw scores is very nearly Gaussian (Irwin-Hall) and the
    Gaussian tail of the likelihood is honest. It is bounded and saturates, so
    no single wild residual dominates the average (the price: a lone outlier
    moves a ``short_window`` average by at most ``1 / short_window``; this
    method finds sustained departures, the z-score method isolated spikes).
    The worst channel's score ``u`` becomes ``u ** channels``, the chance that
    all channels are calmer, which is again Uniform(0, 1) for independent
    Gaussian channels; a plain maximum would crowd the scores of many channels
    near 1 and leave no room above the normal level.

    Returns:
        The raw score per row and the channel it came from.

    >>> score, channel = raw_score(np.array([[0.0, 1.0], [0.0, 6.0]]))
    >>> score.round(4).tolist(), channel.tolist()
    ([0.4661, 1.0], [1, 1])
    """
    score, channel, _ = _worst_channel(erf(np.abs(z) / _SQRT2))
    return score, channel


def _worst_channel(per_channel: Float64Array) -> tuple[Float64Array, npt.NDArray[np.intp], Float64Array]:
    """:func:`raw_score` from each channel's ``erf(|z| / sqrt(2))``, and the worst channel's value."""
    channel = np.argmax(per_channel, axis=1)
    worst = per_channel[np.arange(len(per_channel)), channel]
    score: Float64Array = worst ** per_channel.shape[1]
    return score, channel, worst


def channel_weights(per_channel: Float64Array, worst: Float64Array) -> Float64Array:
    """Each channel's surprise relative to the most surprising channel's (the raw score's).

    ``per_channel`` is each channel's ``u = erf(|z| / sqrt(2))`` and ``worst``
    the largest ``u`` of each row; a channel's surprise
    ``-ln(1 - u)`` is the evidence the residual gives (``1 - u`` is its
    two-sided Gaussian tail probability), which adds up over independent
    channels. A calm channel (typically ``|z| = 0.67``: 0.69 nats) weighs
    little beside one at ``|z| = 5`` (14.4 nats). Channels that tie with the
    most surprising one (all at 0, or all beyond erf's saturation at
    ``|z| = 8.3``) weigh 1.

    >>> u = np.array([[0.5, 0.999, 0.9], [0.0, 0.0, 0.0], [1.0, 1.0, 0.5]])
    >>> channel_weights(u, np.array([0.999, 0.0, 1.0])).round(3).tolist()
    [[0.1, 1.0, 0.333], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        # The worst channel is given: a max over a short axis costs more than all the rest.
        ratio = np.log1p(-per_channel) / np.log1p(-worst)[:, None]
        # 0/0 and inf/inf (ties with the worst channel) are NaN, which fmin turns into 1.
        result: Float64Array = np.fmin(ratio, 1.0)
    return result


def yellow_level(threshold: float) -> float:
    """Score a suppressed red reading is reported with: halfway to ``threshold`` in log tail.

    >>> round(yellow_level(0.9999), 6)
    0.99
    """
    return 1.0 - math.sqrt(1.0 - threshold)


@dataclass(frozen=True)
class LikelihoodStep:
    """The likelihood stage's answer for one round (one row per slot)."""

    likelihood: Float64Array  # before suppression
    score: Float64Array  # after suppression
    anomalous: BoolArray  # likelihood >= threshold
    average: Float64Array  # short moving average of the raw score
    bound: Float64Array  # the average at which the likelihood reaches the threshold


class LikelihoodStage:
    """Raw scores in, anomaly likelihoods out; per-device state in ``table``.

    Separate from the residual scaling so that any stream of raw scores in
    [0, 1] can be calibrated the same way (see :func:`likelihood_of_scores`).
    """

    def __init__(self, table: SlotTable, config: LikelihoodConfig) -> None:
        self.table = table
        self.config = config
        self.short = config.short_window
        self.history = config.history
        self.yellow = yellow_level(config.threshold)
        self.min_var = config.min_std**2
        # The short average at which the likelihood reaches the threshold is
        # mean + std * this.
        self.z_threshold = float(ndtri(config.threshold))
        table.add_field("lik_short", (self.short,), np.float64, 0.0)
        table.add_field("lik_short_sum", (), np.float64, 0.0)
        table.add_field("lik_count", (), np.int64, 0)  # raw scores seen
        table.add_field("lik_clean", (), np.int64, 0)  # consecutive unflagged raw scores
        # Short averages waiting to be judged before they may join the history.
        table.add_field("lik_pending", (self.short,), np.float64, 0.0)
        table.add_field("lik_hist_count", (), np.int64, 0)  # short averages ever kept
        self.exponential = config.estimator == "exponential"
        if self.exponential:
            # Exponentially weighted mean and variance of the kept averages,
            # with the span of the window: O(1) memory per device.
            self.alpha = 2.0 / (self.history + 1.0)
            table.add_field("lik_ew_mean", (), np.float64, 0.0)
            table.add_field("lik_ew_var", (), np.float64, 0.0)
        else:
            table.add_field("lik_hist", (self.history,), np.uint16, 0)  # quantised averages
            # Sums of the quantised averages in the ring and of their squares.
            table.add_field("lik_hist_sum", (), np.int64, 0)
            table.add_field("lik_hist_sumsq", (), np.int64, 0)
        table.add_field("lik_mean", (), np.float64, np.nan)  # NaN: no estimate yet
        table.add_field("lik_std", (), np.float64, np.nan)
        table.add_field("lik_since", (), np.int64, 0)  # raw scores since the last estimate
        table.add_field("lik_red", (), np.bool_, False)  # previous raw score was red
        # Raw-score count at the last red reported with its likelihood; far
        # in the past until the first one, so that one is always reported.
        # Declared only when used: the default state layout (and so the
        # snapshot schema) stays as it was.
        self.quiet = config.quiet_period
        if self.quiet:
            table.add_field("lik_reported", (), np.int64, -(2**62))

    def step(self, slots: IndexArray, raw: Float64Array, active: BoolArray) -> LikelihoodStep:
        """Advance each slot by one raw score; rows not ``active`` are left untouched.

        Args:
            slots: Distinct slots.
            raw: Raw score in [0, 1] per slot (ignored where not active).
            active: Rows that carry a raw score.
        """
        cfg = self.config
        t = self.table
        raw = np.where(active, raw, 0.0)

        # Short average: replace the oldest raw score in the ring.
        count = t["lik_count"][slots]
        pos = count % self.short
        ring = t["lik_short"]
        leaving = ring[slots, pos]
        short_sum = np.where(active, t["lik_short_sum"][slots] - leaving + raw, t["lik_short_sum"][slots])
        count = np.where(active, count + 1, count)
        average = short_sum / np.maximum(np.minimum(count, self.short), 1)
        average = np.maximum(average, 0.0)  # the running sum may round a hair below 0

        # Estimate when due, from averages of earlier readings only.
        mean = t["lik_mean"][slots]
        std = t["lik_std"][slots]
        since = np.where(active, t["lik_since"][slots] + 1, t["lik_since"][slots])
        hist_count = t["lik_hist_count"][slots]
        fill = np.minimum(hist_count, self.history)
        due = active & (count > cfg.learning_period) & (np.isnan(mean) | (since >= cfg.reestimation_period))
        due &= fill > 0
        if due.any():
            if self.exponential:
                fit_mean = t["lik_ew_mean"][slots]
                fit_var = t["lik_ew_var"][slots]
            else:
                kept = np.maximum(fill, 1) * float(QUANTUM)
                fit_mean = t["lik_hist_sum"][slots] / kept
                fit_var = t["lik_hist_sumsq"][slots] / (kept * QUANTUM) - fit_mean * fit_mean
            fit_std = np.sqrt(np.maximum(fit_var, self.min_var))
            mean = np.where(due, fit_mean, mean)
            std = np.where(due, fit_std, std)
            since = np.where(due, 0, since)

        estimated = active & ~np.isnan(mean)
        z = np.where(estimated, average - mean, 0.0) / np.where(estimated, std, 1.0)
        likelihood = np.where(estimated, ndtr(z), NEUTRAL)
        red = estimated & (likelihood >= cfg.threshold)
        was_red = t["lik_red"][slots]
        # A red that continues an episode is shown at the yellow level; so is
        # one within quiet_period readings of the last red shown as red. NAB
        # (like an operator) counts only the first alarm of an anomaly, but
        # every later one outside it as a false alarm.
        quiet = red & was_red
        if self.quiet:
            reported = t["lik_reported"][slots]
            quiet |= red & (count - reported <= self.quiet)
            t["lik_reported"][slots[active]] = np.where(red & ~quiet, count, reported)[active]
        score = np.where(quiet, self.yellow, likelihood)
        bound = np.where(estimated, mean + std * self.z_threshold, 1.0)

        # The average of short_window - 1 readings ago joins the history when
        # its own window and every reading since were unflagged.
        clean = np.where(red, 0, t["lik_clean"][slots] + 1)
        keep = active & (clean >= 2 * self.short - 1)
        pending = t["lik_pending"]
        pending[slots[active], pos[active]] = average[active]
        judged = pending[slots, count % self.short]

        rows = slots[active]
        ring[rows, pos[active]] = raw[active]
        t["lik_short_sum"][rows] = short_sum[active]
        t["lik_count"][rows] = count[active]
        t["lik_mean"][rows] = mean[active]
        t["lik_std"][rows] = std[active]
        t["lik_since"][rows] = since[active]
        t["lik_red"][rows] = red[active]
        t["lik_clean"][rows] = clean[active]
        kept_rows = slots[keep]
        t["lik_hist_count"][kept_rows] = hist_count[keep] + 1
        if self.exponential:
            self._learn_exponential(kept_rows, judged[keep], hist_count[keep])
        else:
            self._learn_window(kept_rows, judged[keep], hist_count[keep])
        return LikelihoodStep(
            likelihood=likelihood,
            score=score,
            anomalous=red,
            average=average,
            bound=bound,
        )


    def _learn_window(self, rows: IndexArray, average: Float64Array, kept: npt.NDArray[np.int64]) -> None:
        """Put ``average`` into the history ring of ``rows`` (``kept`` averages so far)."""
        t = self.table
        new = np.rint(np.clip(average, 0.0, 1.0) * QUANTUM).astype(np.int64)
        hist_pos = kept % self.history
        hist = t["lik_hist"]
        old = hist[rows, hist_pos].astype(np.int64)  # 0 until the ring has wrapped
        hist[rows, hist_pos] = new
        t["lik_hist_sum"][rows] += new - old
        t["lik_hist_sumsq"][rows] += new * new - old * old

    def _learn_exponential(self, rows: IndexArray, average: Float64Array,
                           kept: npt.NDArray[np.int64]) -> None:
        """Fold ``average`` into the exponentially weighted mean and variance of ``rows``."""
        t = self.table
        # Early on the weight is 1/(n+1): plain sample statistics until the
        # exponential window takes over.
        weight = np.maximum(self.alpha, 1.0 / (kept + 1.0))
        mean = t["lik_ew_mean"][rows]
        diff = average - mean
        t["lik_ew_mean"][rows] = mean + weight * diff
        t["lik_ew_var"][rows] = (1.0 - weight) * (t["lik_ew_var"][rows] + weight * diff * diff)


class AnomalyLikelihood:
    """Anomaly likelihood threshold on forecast residuals, vectorised over slots."""

    method = "likelihood"

    def __init__(self, table: SlotTable, channels: int, config: ThresholdsConfig) -> None:
        self.table = table
        self.config = config.likelihood
        # The residual scale is learned on the time-scale of the learning
        # period, so it has settled by the first estimate and follows slow
        # drift afterwards (keeping raw scores near Uniform(0, 1)).
        self.alpha = 2.0 / (self.config.learning_period + 1.0)
        # The z-score method's residual floor (thresholds.zscore.min_std): a
        # perfectly flat signal must not turn rounding jitter into huge z.
        self.min_var = config.zscore.min_std**2
        table.add_field("lik_res_mean", (channels,), np.float64, 0.0)
        table.add_field("lik_res_var", (channels,), np.float64, 0.0)
        table.add_field("lik_res_count", (), np.int64, 0)  # residuals learned
        table.add_field("lik_res_seen", (), np.int64, 0)  # usable residuals
        table.add_field("lik_res_clean", (), np.int64, 0)  # consecutive unflagged usable residuals
        # The last short_window residuals, learned once judged.
        self.delay = self.config.short_window
        table.add_field("lik_res_pending", (self.delay, channels), np.float64, 0.0)
        self.stage = LikelihoodStage(table, self.config)
        # source: pattern: the raw score is pattern novelty of the readings.
        self.pattern = (
            PatternNovelty(table, channels, self.config.pattern_buckets, self.config.pattern_order,
                           self.config.pattern_learning, self.config.pattern_context_span,
                           self.config.pattern_context_buckets)
            if self.config.source == "pattern" else None)

    def update(self, slots: IndexArray, residual: Float64Array, scored: BoolArray,
               values: Float64Array | None = None) -> ThresholdResult:
        """Score one residual per slot and learn from the unflagged ones.

        Args:
            slots: Distinct slots.
            residual: ``(n, channels)`` actual minus forecast; NaN rows are
                skipped (no forecast yet).
            scored: Rows past warm-up; only these are scored and learned from.
            values: The readings ``(n, channels)``; needed with
                ``source: pattern``, which scores them instead of the residual.

        Returns:
            ``score`` is the likelihood after red-zone suppression (0.5 where
            there is none yet), ``anomalous`` the decision (true for
            suppressed red readings too), ``channel`` the worst channel,
            ``smoothed`` the short average of the raw score and
            ``threshold`` the short average at which the likelihood reaches
            the threshold (1.0 while there is no estimate).
        """
        t = self.table
        valid: BoolArray = np.asarray(np.isfinite(residual).all(axis=1))
        usable = valid & scored
        mean = t["lik_res_mean"][slots]
        var = t["lik_res_var"][slots]
        count = t["lik_res_count"][slots]
        safe_residual = np.where(valid[:, None], residual, 0.0)
        z = (safe_residual - mean) / np.sqrt(np.maximum(var, self.min_var))
        per_channel = erf(np.abs(z) / _SQRT2)
        raw, channel, worst = _worst_channel(per_channel)
        active = usable & (count >= MIN_RESIDUAL_SAMPLES)
        if self.pattern is not None:
            if values is None:
                raise ValueError("likelihood.source 'pattern' needs the readings (values)")
            # Every reading teaches the pattern table, warm-up included.
            novelty = self.pattern.update(slots, values)
            raw = np.nan_to_num(novelty, nan=0.0)
            active = scored & np.isfinite(novelty)
        step = self.stage.step(slots, raw, active)
        anomalous = step.anomalous

        # Learn the residual of short_window - 1 readings ago when neither it
        # nor any reading since was flagged.
        seen = t["lik_res_seen"][slots]
        clean = np.where(anomalous, 0, t["lik_res_clean"][slots] + 1)
        pending = t["lik_res_pending"]
        pending[slots[usable], seen[usable] % self.delay] = safe_residual[usable]
        judged = pending[slots, (seen + 1) % self.delay]
        rows = slots[usable]
        t["lik_res_seen"][rows] = seen[usable] + 1
        t["lik_res_clean"][rows] = clean[usable]
        learn = usable & (clean >= self.delay)
        # Early on the weight is 1/(n+1), so the statistics are plain sample
        # ones until the exponential window takes over.
        weight = np.maximum(self.alpha, 1.0 / (count + 1.0))[:, None]
        diff = judged - mean
        rows = slots[learn]
        t["lik_res_mean"][rows] = (mean + weight * diff)[learn]
        t["lik_res_var"][rows] = ((1.0 - weight) * (var + weight * diff * diff))[learn]
        t["lik_res_count"][rows] = count[learn] + 1
        score = step.score
        # Each channel gets the row's score in proportion to its own surprise.
        judged = np.where(usable, score, 0.0)[:, None]
        channel_scores = judged if z.shape[1] == 1 else judged * channel_weights(per_channel, worst)
        return ThresholdResult(
            score=score,
            anomalous=anomalous,
            channel=channel,
            smoothed=step.average,
            threshold=step.bound,
            channel_scores=channel_scores,
        )


def likelihood_of_scores(raw: Float64Array, config: LikelihoodConfig) -> tuple[Float64Array, BoolArray]:
    """Calibrate one stream of raw anomaly scores in [0, 1] offline.

    The same learning, estimation, decision and suppression as the streaming
    threshold, for evaluating other detectors' raw scores. NaN entries are
    skipped (score 0.5, not anomalous).

    Returns:
        The score (likelihood after suppression) and the decision per entry.

    >>> score, flags = likelihood_of_scores(np.full(5, 0.1), LikelihoodConfig(learning_period=10))
    >>> score.tolist(), flags.any()
    ([0.5, 0.5, 0.5, 0.5, 0.5], np.False_)
    """
    stage = LikelihoodStage(SlotTable(1), config)
    slot = np.zeros(1, dtype=np.intp)
    scores = np.full(len(raw), NEUTRAL)
    flags = np.zeros(len(raw), dtype=bool)
    for index, value in enumerate(np.asarray(raw, dtype=np.float64).tolist()):
        if math.isnan(value):
            continue
        step = stage.step(slot, np.array([value]), np.ones(1, dtype=bool))
        scores[index] = step.score[0]
        flags[index] = step.anomalous[0]
    return scores, flags
