"""What every threshold method answers for one round of readings.

``channel_scores`` explains ``score``: every method gives each channel its own
score, and the row's ``score`` is that of ``channel``, the highest one. The
post-processors (record gate, range novelty, stuck sensors) keep it so: a
channel they flag gets the score they report, so an alert names the channel
that raised it (:mod:`streamer.alerts.events` builds its ``drivers`` from
these scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IndexArray = npt.NDArray[np.intp]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ThresholdResult:
    """Decision for each reading of one round (one row per slot)."""

    score: npt.NDArray[np.float64]  # anomaly score in [0, 1], max over channels
    anomalous: npt.NDArray[np.bool_]  # the decision
    channel: npt.NDArray[np.intp]  # channel with the highest score
    smoothed: npt.NDArray[np.float64]  # smoothed residual (or the method's statistic) of that channel
    threshold: npt.NDArray[np.float64]  # the bound on that statistic on the side it was crossed
    # (rows, channels) score in [0, 1] of each channel, 0 where the row was not
    # judged; on judged rows score == channel_scores[row, channel], the row's maximum.
    channel_scores: npt.NDArray[np.float64]


def override_channel(channel_scores: Float64Array, rows: BoolArray, channel: IndexArray,
                     score: Float64Array) -> Float64Array:
    """A copy of ``channel_scores`` with ``score`` on ``channel`` of ``rows``.

    A detector that flags a row on one of its channels (range novelty, a
    stuck sensor) gives that channel the score it reports for the row, so
    the channel stays the row's highest and the alert's explanation names it.

    >>> override_channel(np.array([[0.2, 0.4], [0.2, 0.4]]), np.array([True, False]), np.array([0, 0]),
    ...                  np.array([1.0, 0.4])).tolist()
    [[1.0, 0.4], [0.2, 0.4]]
    """
    result = channel_scores.copy()
    picked = np.flatnonzero(rows)
    result[picked, channel[picked]] = score[picked]
    return result


def take(result: ThresholdResult, rows: IndexArray) -> ThresholdResult:
    """The decisions of ``rows`` only."""
    return ThresholdResult(score=result.score[rows], anomalous=result.anomalous[rows],
                           channel=result.channel[rows], smoothed=result.smoothed[rows],
                           threshold=result.threshold[rows],
                           channel_scores=result.channel_scores[rows])


def scatter(parts: list[tuple[IndexArray, ThresholdResult]], count: int, channels: int) -> ThresholdResult:
    """One result of ``count`` rows from results of disjoint row sets that cover them."""
    merged = ThresholdResult(score=np.zeros(count), anomalous=np.zeros(count, dtype=bool),
                             channel=np.zeros(count, dtype=np.intp), smoothed=np.full(count, np.nan),
                             threshold=np.full(count, np.nan), channel_scores=np.zeros((count, channels)))
    for rows, part in parts:
        merged.score[rows] = part.score
        merged.anomalous[rows] = part.anomalous
        merged.channel[rows] = part.channel
        merged.smoothed[rows] = part.smoothed
        merged.threshold[rows] = part.threshold
        merged.channel_scores[rows] = part.channel_scores
    return merged
