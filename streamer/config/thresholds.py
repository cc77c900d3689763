"""``thresholds``: the residual's method and its parameters, and the checks that judge around it."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from streamer.config.base import NonNegativeInt, PositiveFloat, PositiveInt, Section, UnitInterval


class DynamicThresholdConfig(Section, frozen=True):
    """Nonparametric dynamic threshold (Hundman et al., KDD 2018), made streaming.

    Defaults are the published ones.
    """

    # Trailing smoothed errors the threshold is chosen over (h).
    window: Annotated[int, msgspec.Meta(ge=10)] = 2100
    # EWMA span of the absolute residual.
    smoothing_span: Annotated[float, msgspec.Meta(ge=1)] = 105.0
    # Candidate thresholds mean + z * std for z in [z_min, z_max] by z_step.
    z_min: PositiveFloat = 2.5
    z_max: PositiveFloat = 11.5
    z_step: PositiveFloat = 0.5
    # A candidate flagging more sequences than this is rejected.
    max_sequences: PositiveInt = 5
    # A candidate flagging this fraction of the window or more is rejected.
    max_fraction: UnitInterval = 0.5
    # Prune a flagged sequence whose peak is within this fraction of the next lower peak.
    prune_p: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.13
    # Readings either side of a flagged point that join it into one sequence.
    error_buffer: NonNegativeInt = 100
    # Re-evaluate the threshold every this many readings of a device (1 = every reading).
    decision_interval: PositiveInt = 70
    # Smoothed errors a device needs before the first evaluation.
    min_history: Annotated[int, msgspec.Meta(ge=2)] = 100
    # Also search the inverted errors (2*mean - e), catching drops.
    inverted: bool = True

    def __post_init__(self) -> None:
        if self.z_max < self.z_min:
            raise ValueError("z_max must be >= z_min")
        if self.min_history > self.window:
            raise ValueError("min_history must be <= window")


class LikelihoodConfig(Section, frozen=True):
    """Anomaly likelihood: Gaussian tail of a short average of the raw score against its history."""

    # Readings in the short moving average of the raw score.
    short_window: PositiveInt = 10
    # Raw scores kept for the long-run mean and variance.
    history: Annotated[int, msgspec.Meta(ge=10)] = 8640
    # How the long-run mean and variance of the short averages are kept.
    # window: exact, over a ring of the last `history` averages (2 bytes each:
    # ~17 KB per device at 8640). exponential: exponentially weighted with
    # span `history`, 16 bytes per device; recent averages weigh more and an
    # old outlier fades instead of dropping out at once.
    estimator: Literal["window", "exponential"] = "exponential"
    # Readings before the first estimate (the likelihood is 0.5 until then).
    learning_period: PositiveInt = 288
    # Re-estimate the mean and variance every this many readings.
    reestimation_period: PositiveInt = 100
    # Likelihood at or above this flags a reading.
    threshold: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.9999
    # Floor of the long-run standard deviation of the averaged raw score.
    min_std: PositiveFloat = 1e-4
    # Readings after a reported red during which a further red is reported at
    # the yellow level (still flagged); 0: only an episode's continuation is.
    quiet_period: NonNegativeInt = 0
    # Where the raw score comes from. residual: the forecast residual,
    # erf(|z|/sqrt(2)). pattern: model-free pattern novelty, 1.0 when the last
    # `pattern_order` readings, quantised to `pattern_buckets` levels of the
    # range of the device's first `pattern_learning` readings, form a pattern
    # the device never showed (streamer.thresholds.pattern; ~+6 on NAB with
    # range novelty, see README, Evaluation).
    source: Literal["residual", "pattern"] = "residual"
    pattern_buckets: Annotated[int, msgspec.Meta(ge=1, le=62)] = 6
    pattern_order: Annotated[int, msgspec.Meta(ge=1, le=4)] = 2
    pattern_learning: Annotated[int, msgspec.Meta(ge=4)] = 288
    # pattern: add the level of a moving average of the readings (span
    # pattern_context_span readings, `pattern_context_buckets` levels of the
    # same range, +2 beyond it) to each pattern, so that a pair of levels is
    # also judged by where the signal has been lately. null: off.
    pattern_context_span: Annotated[int, msgspec.Meta(ge=1)] | None = None
    pattern_context_buckets: Annotated[int, msgspec.Meta(ge=1, le=62)] = 2


class StuckConfig(Section, frozen=True):
    """Stuck sensors: a channel that repeats one value for far longer than its device ever has.

    A forecast residual cannot see them (a stuck sensor is easy to forecast);
    see :mod:`streamer.thresholds.stuck`. Defaults measured on the simulated
    fleet, MSL, NAB and SKAB (README, Thresholds and alerts).
    """

    # Off: no per-device state, nothing flagged.
    enabled: bool = True
    # A run of identical readings this long or shorter is never stuck. The
    # NAB Twitter series share a 26-reading outage at zero that is not labelled.
    min_run: Annotated[int, msgspec.Meta(ge=1)] = 30
    # ... nor one up to this multiple of the longest run the device has shown
    # while not flagged, so channels that are naturally flat for long stretches
    # stay quiet (normal runs on MSL, NAB and SKAB reach 4.8x the longest
    # before them; the labelled stuck ones 276x and more).
    factor: Annotated[float, msgspec.Meta(ge=1)] = 10.0
    # A reading within this share of the device's observed range (max - min)
    # of the run's first reading extends the run (variance collapse); 0: exact
    # repeats only.
    tolerance: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.0
    # Readings a device must have shown before a run began for the run to be
    # judged: a run from a device's first readings has no history to judge it by.
    min_readings: NonNegativeInt = 80


class RecordGateConfig(Section, frozen=True):
    """zscore's flags stand only where the residual beats the device's recent largest.

    See :mod:`streamer.thresholds.record`; measured on MSL, NAB, SKAB and the
    simulated fleet (README, Thresholds and alerts).
    """

    # Off: every flag of the method stands, no per-device state.
    enabled: bool = True
    # Readings the record covers: an extreme is forgotten after half of this
    # to this many readings (the range novelty horizon).
    horizon: Annotated[int, msgspec.Meta(ge=2)] | None = 8640
    # A residual must beat the record by this share of it (0: any larger residual).
    margin: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    # Scored residuals the record must have learned before any flag stands: as
    # many as the warm-up (a device's 80th reading with the defaults). On the
    # simulated fleet 20-40 catch the same anomalies with 2 false alerts over
    # 8 seeds, 60 misses 12 more, 0 raises 4 (README, Thresholds and alerts).
    min_readings: NonNegativeInt = 40


class ZScoreConfig(Section, frozen=True):
    """The rolling z-score of the smoothed residual (``method: zscore``)."""

    # EWMA span of the residual smoothing (1 = no smoothing).
    smoothing_span: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    # Span of the exponentially weighted mean and variance of the smoothed residual.
    window: Annotated[int, msgspec.Meta(ge=16)] = 200
    # |z| at or above this flags a reading.
    z: PositiveFloat = 5.0
    # Standard deviation floor, so a perfectly flat signal does not alert on jitter.
    min_std: Annotated[float, msgspec.Meta(ge=0)] = 1e-6
    # A second floor on the residual's standard deviation, as a share of the
    # device's observed range (max - min): a signal that is flat for a while
    # must not turn its next small step into an enormous z.
    min_std_fraction: Annotated[float, msgspec.Meta(ge=0)] = 0.01


class RangeNoveltyConfig(Section, frozen=True):
    """Range novelty, for every method: a reading beyond the device's recent range is flagged.

    A reading beyond the device's recent [min, max] by more than ``margin`` of
    max - min scores 1.0 and is flagged, whatever its residual (catches jumps
    to never-seen levels that a one-step forecaster absorbs after one
    reading). Off by default: on the simulated fleet (slow drifts and cycles
    longer than a young range) it raises false alerts; on NAB, 0.02 is worth
    ~35 points (see README, Evaluation).
    """

    # Share of max - min beyond the range; null: off.
    margin: Annotated[float, msgspec.Meta(ge=0)] | None = None
    # Readings the range covers: an extreme is forgotten after between half of
    # this and this many readings (8640 = 30 days at 5 minutes). null: all-time.
    horizon: Annotated[int, msgspec.Meta(ge=2)] | None = 8640
    # Readings a device must have shown before a reading can be novel.
    min_readings: NonNegativeInt = 100
    # Readings after a novel reading scored 1.0 during which a further novel
    # reading keeps the method's score (still flagged); 0: every one scores 1.0.
    quiet_period: NonNegativeInt = 0


class ThresholdsConfig(Section, frozen=True):
    """Residual to score and decision: the method, its parameters, and the checks around it.

    Each method has its own subsection (``zscore``, ``dynamic``,
    ``likelihood``); ``range_novelty``, ``record_gate`` and ``stuck`` judge
    around whichever method runs.
    """

    # zscore: rolling z-score of the smoothed residual; dynamic: Hundman et al.'s
    # nonparametric threshold; likelihood: anomaly likelihood of the residual.
    method: Literal["zscore", "dynamic", "likelihood"] = "zscore"
    # Readings a device must have before it is scored.
    warmup: NonNegativeInt = 40
    zscore: ZScoreConfig = msgspec.field(default_factory=ZScoreConfig)
    dynamic: DynamicThresholdConfig = msgspec.field(default_factory=DynamicThresholdConfig)
    likelihood: LikelihoodConfig = msgspec.field(default_factory=LikelihoodConfig)
    # Range novelty (streamer.thresholds.novelty), for every method.
    range_novelty: RangeNoveltyConfig = msgspec.field(default_factory=RangeNoveltyConfig)
    # zscore's flags stand only at residual records (streamer.thresholds.record).
    record_gate: RecordGateConfig = msgspec.field(default_factory=RecordGateConfig)
    # Stuck sensors, for every method (streamer.thresholds.stuck).
    stuck: StuckConfig = msgspec.field(default_factory=StuckConfig)


# Keys that moved into a subsection, for a load error that says where they went.
MOVED_KEYS: dict[tuple[str, str], str] = {
    **{("thresholds", key): f"thresholds.zscore.{key}"
       for key in ("smoothing_span", "window", "z", "min_std", "min_std_fraction")},
    **{("thresholds", f"range_{key}"): f"thresholds.range_novelty.{key}"
       for key in ("margin", "horizon", "min_readings", "quiet_period")},
}
