import numpy as np

from streamer.config import RangeNoveltyConfig
from streamer.state.slot_table import SlotTable
from streamer.thresholds.novelty import NOVEL_SCORE, RangeNovelty, apply_novelty, make_novelty
from streamer.thresholds.result import ThresholdResult


def judge(novelty: RangeNovelty, values: list[float]) -> list[bool]:
    slot = np.array([0])
    return [bool(novelty.update(slot, np.array([[v]]))[0][0]) for v in values]


def test_range_novelty_flags_a_reading_beyond_the_widened_range_once() -> None:
    novelty = RangeNovelty(SlotTable(2), channels=2, margin=0.1)
    slots = np.array([0, 1])
    history = [[0.0, 5.0], [10.0, 5.0], [5.0, 5.0]]
    for row in history:
        novel, _ = novelty.update(slots, np.array([row, row]))
        assert not novel.any()  # channel 1 has no width yet: never novel
    novel, channel = novelty.update(slots, np.array([[10.5, 5.0], [-2.0, 5.0]]))
    assert novel.tolist() == [False, True]  # within the 10 % margin / beyond it
    assert channel[1] == 0
    novel, _ = novelty.update(slots, np.array([[5.0, 9.0], [-2.1, 5.0]]))
    # Channel 1 has width 0 before 9.0 -> not novel; slot 1 widened to -2: -2.1 is inside the margin.
    assert novel.tolist() == [False, False]
    assert novelty.table["nov_min"][1].tolist() == [-2.1, 5.0]


def test_range_novelty_skips_nan_readings() -> None:
    novelty = RangeNovelty(SlotTable(1), channels=1, margin=0.0)
    assert judge(novelty, [0.0, 1.0, np.nan]) == [False, False, False]
    assert novelty.table["nov_max"][0, 0] == 1.0


def test_no_novelty_before_min_readings() -> None:
    values = [0.0, 1.0, 5.0, 9.0, 20.0]
    assert judge(RangeNovelty(SlotTable(1), 1, margin=0.0, min_readings=4), values) == [
        False, False, False, False, True]
    assert judge(RangeNovelty(SlotTable(1), 1, margin=0.0), values) == [False, False, True, True, True]


def test_horizon_forgets_an_old_extreme() -> None:
    # Blocks of 5 readings: the spike to 100 leaves the range after two block turns.
    novelty = RangeNovelty(SlotTable(1), 1, margin=0.1, horizon=10)
    calm = [0.0, 1.0] * 10
    flags = judge(novelty, [0.0, 1.0, 100.0, *calm, 50.0])
    assert flags[2] and flags[-1]
    assert not any(flags[3:-1])
    remembering = RangeNovelty(SlotTable(1), 1, margin=0.1)
    assert judge(remembering, [0.0, 1.0, 100.0, *calm, 50.0])[-1] is False


def test_make_novelty_follows_the_config() -> None:
    assert make_novelty(SlotTable(1), 1, RangeNoveltyConfig(margin=None)) is None
    novelty = make_novelty(SlotTable(1), 1, RangeNoveltyConfig(margin=0.5, horizon=None, min_readings=7))
    assert novelty is not None
    assert (novelty.margin, novelty.block, novelty.min_readings, novelty.quiet) == (0.5, None, 7, 0)
    quiet = make_novelty(SlotTable(1), 1, RangeNoveltyConfig(margin=0.5, quiet_period=20))
    assert quiet is not None and quiet.quiet == 20


def decision(n: int, channels: int = 1) -> ThresholdResult:
    """A calm decision: channel 0 scores 0.25, any other channel 0.1."""
    channel_scores = np.full((n, channels), 0.1)
    channel_scores[:, 0] = 0.25
    return ThresholdResult(score=np.full(n, 0.25), anomalous=np.zeros(n, bool),
                           channel=np.zeros(n, np.intp), smoothed=np.zeros(n), threshold=np.ones(n),
                           channel_scores=channel_scores)


def test_apply_novelty_raises_only_scored_novel_rows() -> None:
    novelty = RangeNovelty(SlotTable(3), channels=2, margin=0.0)
    slots = np.array([0, 1, 2])
    everyone = np.ones(3, bool)
    for row in ([0.0, 0.0], [1.0, 1.0]):
        apply_novelty(novelty, slots, np.array([row] * 3), everyone, decision(3, channels=2))
    values = np.array([[0.5, 3.0], [0.5, 0.5], [0.5, 3.0]])
    result = apply_novelty(novelty, slots, values, np.array([True, True, False]), decision(3, channels=2))
    assert result.score.tolist() == [NOVEL_SCORE, 0.25, 0.25]
    assert result.anomalous.tolist() == [True, False, False]
    assert result.channel.tolist() == [1, 0, 0]
    # The novel channel carries the novel score, so the alert's explanation names it.
    assert result.channel_scores.tolist() == [[0.25, NOVEL_SCORE], [0.25, 0.1], [0.25, 0.1]]
    # The unscored row still taught its range.
    assert novelty.table["nov_max"][2].tolist() == [1.0, 3.0]


def test_quiet_period_keeps_the_flag_but_not_the_top_score() -> None:
    # A ramp: every reading is a new maximum, so every one is novel.
    novelty = RangeNovelty(SlotTable(1), channels=1, margin=0.0, quiet=3)
    slot = np.array([0])
    everyone = np.ones(1, bool)
    apply_novelty(novelty, slot, np.array([[0.0]]), everyone, decision(1))
    results = [apply_novelty(novelty, slot, np.array([[float(v)]]), everyone, decision(1))
               for v in range(1, 11)]
    assert [bool(r.anomalous[0]) for r in results[1:]] == [True] * 9
    # The first novel reading (value 2) scores 1.0, the next three keep the
    # method's 0.25, then the quiet period is over.
    assert [float(r.score[0]) for r in results[1:]] == [
        NOVEL_SCORE, 0.25, 0.25, 0.25, NOVEL_SCORE, 0.25, 0.25, 0.25, NOVEL_SCORE]


def test_a_quiet_novel_reading_puts_the_methods_score_on_its_channel() -> None:
    novelty = RangeNovelty(SlotTable(1), channels=2, margin=0.0, quiet=3)
    slot = np.array([0])
    everyone = np.ones(1, bool)
    for row in ([0.0, 0.0], [1.0, 1.0]):
        apply_novelty(novelty, slot, np.array([row]), everyone, decision(1, channels=2))
    calm = decision(1, channels=2)
    shown, quiet = (apply_novelty(novelty, slot, np.array([[0.5, v]]), everyone, calm) for v in (2.0, 3.0))
    assert shown.channel_scores.tolist() == [[0.25, NOVEL_SCORE]]
    assert quiet.score.tolist() == [0.25] and quiet.channel.tolist() == [1]
    assert quiet.channel_scores.tolist() == [[0.25, 0.25]]
    assert calm.channel_scores.tolist() == [[0.25, 0.1]]  # the method's decision is not mutated


def test_quiet_period_is_per_device_and_counts_readings_not_novelties() -> None:
    novelty = RangeNovelty(SlotTable(2), channels=1, margin=0.5, quiet=2)
    slots = np.array([0, 1])
    everyone = np.ones(2, bool)
    for row in ([0.0, 0.0], [1.0, 1.0]):
        apply_novelty(novelty, slots, np.array([[v] for v in row]), everyone, decision(2))
    # Slot 0 jumps at once; slot 1 two readings later, while slot 0 jumps again inside its quiet period.
    rows = [[5.0, 0.5], [0.5, 0.5], [20.0, 5.0], [0.5, 0.5], [60.0, 0.5]]
    scores = [apply_novelty(novelty, slots, np.array([[v] for v in row]), everyone, decision(2))
              .score.tolist() for row in rows]
    assert [s[0] for s in scores] == [NOVEL_SCORE, 0.25, 0.25, 0.25, NOVEL_SCORE]
    assert [s[1] for s in scores] == [0.25, 0.25, NOVEL_SCORE, 0.25, 0.25]


def test_quiet_period_leaves_the_default_state_layout_alone() -> None:
    assert "nov_reported" not in RangeNovelty(SlotTable(1), 1, margin=0.1).table
    assert "nov_reported" in RangeNovelty(SlotTable(1), 1, margin=0.1, quiet=1).table
