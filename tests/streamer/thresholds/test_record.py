import msgspec
import numpy as np
import pytest

from streamer.config import Config, RecordGateConfig, load_config
from streamer.errors import ConfigError
from streamer.scoring.pipeline import ScoringPipeline
from streamer.state.slot_table import SlotTable
from streamer.thresholds.record import HELD_SCORE, ResidualRecord, apply_record_gate, make_record_gate
from streamer.thresholds.result import ThresholdResult

ONE = np.zeros(1, dtype=np.intp)
CLOSED, OPEN = np.array([False]), np.array([True])


def records(record: ResidualRecord, residuals: list[float]) -> list[bool]:
    """Feed one single-channel slot residual by residual; whether each was a record."""
    return [bool(record.update(ONE, np.array([[r]]), ONE)[0]) for r in residuals]


def flagged(score: float, anomalous: bool, rows: int = 1, channel: int = 0,
            channels: int = 1) -> ThresholdResult:
    """A decision: ``channel`` with ``score``, any other channel with half of it."""
    channel_scores = np.full((rows, channels), score / 2)
    channel_scores[:, channel] = score
    return ThresholdResult(score=np.full(rows, score), anomalous=np.full(rows, anomalous),
                           channel=np.full(rows, channel, dtype=np.intp), smoothed=np.full(rows, 1.0),
                           threshold=np.full(rows, 0.5), channel_scores=channel_scores)


def test_a_record_beats_every_magnitude_seen_and_then_becomes_the_bar() -> None:
    record = ResidualRecord(SlotTable(1), channels=1, horizon=None)
    assert records(record, [1.0, -2.0, 1.5, 2.0, 2.5, -3.0, 2.9]) == [
        False, True, False, False, True, True, False]


def test_no_record_before_min_readings_residuals_were_learned() -> None:
    record = ResidualRecord(SlotTable(1), channels=1, horizon=None, min_readings=3)
    assert records(record, [1.0, 2.0, 3.0, 4.0]) == [False, False, False, True]


def test_nan_residuals_are_neither_judged_nor_learned() -> None:
    record = ResidualRecord(SlotTable(1), channels=1, horizon=None, min_readings=2)
    assert records(record, [1.0, float("nan"), float("nan"), 2.0, 3.0]) == [False, False, False, False, True]


def test_margin_asks_for_a_clear_record() -> None:
    record = ResidualRecord(SlotTable(1), channels=1, horizon=None, margin=0.5)
    # 2.9 misses 2.0 * 1.5 but becomes the bar: 4.4 beats 2.9 * 1.5, 5.0 misses 4.4 * 1.5.
    assert records(record, [2.0, 2.9, 4.4, 5.0]) == [False, False, True, False]


def test_an_extreme_is_forgotten_within_the_horizon() -> None:
    # Blocks of 5: the 10.0 leaves the record once two later blocks have filled.
    record = ResidualRecord(SlotTable(1), channels=1, horizon=10)
    flags = records(record, [10.0, *[1.0] * 14, 2.0])
    assert flags[-1]
    assert not any(flags[1:-1])


def test_the_record_is_judged_on_the_flagged_channel_and_learned_on_every_channel() -> None:
    record = ResidualRecord(SlotTable(1), channels=2, horizon=None)
    record.update(ONE, np.array([[1.0, 5.0]]), ONE)
    # 3.0 beats channel 0's record (1.0) but not channel 1's (5.0).
    assert record.update(ONE, np.array([[3.0, 3.0]]), np.array([0]))[0]
    assert not record.update(ONE, np.array([[3.5, 3.5]]), np.array([1]))[0]


def test_the_gate_keeps_flags_at_records_and_lowers_every_other_score() -> None:
    record = ResidualRecord(SlotTable(1), channels=1, horizon=None)
    scored = np.array([True])
    # The first residual teaches the bar; a flag at a smaller residual is held.
    first = apply_record_gate(record, ONE, np.array([[4.0]]), scored, flagged(0.7, False), CLOSED)
    assert first.score[0] == HELD_SCORE
    held = apply_record_gate(record, ONE, np.array([[3.0]]), scored, flagged(0.99, True), CLOSED)
    assert not held.anomalous[0] and held.score[0] == HELD_SCORE
    kept = apply_record_gate(record, ONE, np.array([[5.0]]), scored, flagged(0.99, True), CLOSED)
    assert kept.anomalous[0] and kept.score[0] == 0.99


def test_in_an_open_episode_flags_stand_without_a_record_but_keep_only_the_held_score() -> None:
    record = ResidualRecord(SlotTable(1), channels=1, horizon=None)
    scored = np.array([True])
    apply_record_gate(record, ONE, np.array([[4.0]]), scored, flagged(0.2, False), CLOSED)
    continued = apply_record_gate(record, ONE, np.array([[3.0]]), scored, flagged(0.99, True), OPEN)
    assert continued.anomalous[0] and continued.score[0] == HELD_SCORE
    calm = apply_record_gate(record, ONE, np.array([[3.0]]), scored, flagged(0.3, False), OPEN)
    assert not calm.anomalous[0]


def test_the_gate_holds_every_channel_score_so_the_flagged_channel_stays_the_highest() -> None:
    record = ResidualRecord(SlotTable(1), channels=2, horizon=None)
    scored = np.array([True])
    apply_record_gate(record, ONE, np.array([[1.0, 4.0]]), scored, flagged(0.2, False, channels=2), CLOSED)
    # Channel 1 is flagged but 3.0 is no record on it: both channel scores are held.
    held = apply_record_gate(record, ONE, np.array([[0.5, 3.0]]), scored,
                             flagged(0.99, True, channel=1, channels=2), CLOSED)
    assert held.channel_scores.tolist() == [[HELD_SCORE, HELD_SCORE]]
    assert held.score[0] == held.channel_scores[0, held.channel[0]]
    kept = apply_record_gate(record, ONE, np.array([[0.5, 6.0]]), scored,
                             flagged(0.99, True, channel=1, channels=2), CLOSED)
    assert kept.channel_scores.tolist() == [[0.495, 0.99]]


def test_unscored_rows_do_not_teach_the_record() -> None:
    record = ResidualRecord(SlotTable(1), channels=1, horizon=None)
    warm_up = np.array([False])
    apply_record_gate(record, ONE, np.array([[50.0]]), warm_up, flagged(0.0, False), CLOSED)
    apply_record_gate(record, ONE, np.array([[1.0]]), np.array([True]), flagged(0.0, False), CLOSED)
    later = apply_record_gate(record, ONE, np.array([[2.0]]), np.array([True]), flagged(0.99, True), CLOSED)
    assert later.anomalous[0]


def test_only_the_zscore_method_is_gated_and_enabled_false_turns_it_off() -> None:
    on, off = RecordGateConfig(), RecordGateConfig(enabled=False)
    assert make_record_gate(SlotTable(1), 1, "zscore", on) is not None
    assert make_record_gate(SlotTable(1), 1, "zscore", off) is None
    assert make_record_gate(SlotTable(1), 1, "dynamic", on) is None
    assert make_record_gate(SlotTable(1), 1, "likelihood", on) is None


def spikes_through_pipeline(config: Config, spikes: dict[int, float], n: int = 400) -> list[int]:
    """Readings of one noisy device with spikes added; positions of the readings that opened an episode."""
    from streamer.codec import ReadingBatch

    values = 10.0 + 0.1 * np.random.default_rng(5).standard_normal(n)
    for position, size in spikes.items():
        values[position] += size
    pipeline = ScoringPipeline(config)
    opened = []
    for i, value in enumerate(values.tolist()):
        batch = ReadingBatch(device_ids=["d"], ts_ms=np.array([1_700_000_000_000 + i], np.int64),
                             values=np.array([[value]]), fetched_at=np.zeros(1),
                             record_index=np.zeros(1, np.intp))
        if any(alert.event == "open" for alert in pipeline.score(batch).alerts):
            opened.append(i)
    return opened


def test_pipeline_alerts_once_for_a_repeat_within_the_horizon_and_again_for_a_larger_one() -> None:
    base = load_config(None, environ={})
    replace = msgspec.structs.replace
    config = replace(base, predictor=replace(base.predictor, kind="baseline"),
                     alerts=replace(base.alerts, resolve_after=5))
    # Same-size spikes at 150 and 250: the second is routine by then. A larger one at 350 is a record.
    assert spikes_through_pipeline(config, {150: 3.0, 250: 3.0, 350: 6.0}) == [150, 350]
    gate_off = replace(config, thresholds=replace(config.thresholds,
                                                  record_gate=RecordGateConfig(enabled=False)))
    assert spikes_through_pipeline(gate_off, {150: 3.0, 250: 3.0, 350: 6.0}) == [150, 250, 350]


def test_config_errors_name_the_key(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "bad.yaml"
    path.write_text("thresholds:\n  record_gate:\n    margin: -1\n")
    with pytest.raises(ConfigError, match=r"thresholds\.record_gate\.margin"):
        load_config(path, environ={})
