import numpy as np
import numpy.typing as npt
import pytest

from streamer.state.slot_table import SlotTable
from streamer.thresholds.pattern import PatternNovelty

Array = npt.NDArray[np.float64]


def make(channels: int = 1, capacity: int = 4, buckets: int = 4, order: int = 2,
         learning: int = 8) -> PatternNovelty:
    return PatternNovelty(SlotTable(capacity), channels, buckets, order, learning)


def feed(pattern: PatternNovelty, values: Array, slot: int = 0) -> Array:
    slots = np.array([slot], dtype=np.intp)
    return np.array([pattern.update(slots, np.atleast_1d(v).reshape(1, -1))[0] for v in values])


def cycle(periods: int) -> Array:
    return np.tile(np.array([0.0, 1.0, 2.0, 3.0, 2.0, 1.0]), periods)


def test_no_score_while_learning_the_range() -> None:
    pattern = make(learning=8)
    raw = feed(pattern, cycle(3))
    assert np.isnan(raw[:8]).all()
    assert np.isfinite(raw[8:]).all()
    np.testing.assert_array_equal(pattern.table["pat_low"][0], [0.0])
    np.testing.assert_array_equal(pattern.table["pat_high"][0], [3.0])


def test_a_repeating_cycle_stops_being_novel() -> None:
    raw = feed(make(), cycle(20))
    assert raw[8:20].sum() > 0  # the first patterns after learning are new
    assert (raw[20:] == 0.0).all()  # every transition of the cycle has been seen


def test_a_broken_cycle_is_novel_inside_the_range() -> None:
    pattern = make()
    feed(pattern, cycle(20))
    # Held at a level the cycle only passes through: never seen as a pattern.
    raw = feed(pattern, np.array([2.0, 2.0, 2.0]))
    assert raw[1] == 1.0  # 2 -> 2 never happened
    assert raw[2] == 0.0  # and now it has


def test_values_beyond_the_frozen_range_take_the_outer_levels() -> None:
    pattern = make(buckets=4)
    levels = pattern.level(np.array([-5.0, 0.0, 0.9, 3.0, 3.5, 99.0]), np.array(0.0), np.array(3.0))
    assert levels.tolist() == [0, 1, 2, 4, 5, 5]
    feed(pattern, cycle(20))
    assert feed(pattern, np.array([50.0]))[0] == 1.0
    assert feed(pattern, np.array([60.0]))[0] == 1.0  # above -> above: new
    assert feed(pattern, np.array([70.0]))[0] == 0.0  # same pattern again
    np.testing.assert_array_equal(pattern.table["pat_high"][0], [3.0])  # the range stays frozen


def test_order_one_is_level_novelty() -> None:
    raw = feed(make(order=1, learning=4), np.array([0.0, 3.0, 0.0, 3.0, 0.0, 3.0, 1.0, 1.0]))
    assert raw[4:].tolist() == [1.0, 1.0, 1.0, 0.0]


def test_channels_are_averaged() -> None:
    pattern = make(channels=2)
    values = np.stack([cycle(20), cycle(20)[::-1]], axis=1)
    slots = np.array([0], dtype=np.intp)
    for row in values:
        pattern.update(slots, row[None, :])
    raw = pattern.update(slots, np.array([[2.0, 1.0]]))  # channel 0: 1 -> 2 seen; channel 1: 0 -> 1 seen
    assert raw[0] == 0.0
    raw = pattern.update(slots, np.array([[2.0, 3.0]]))  # channel 0: 2 -> 2 new; channel 1: 1 -> 3 new
    assert raw[0] == 1.0
    raw = pattern.update(slots, np.array([[1.0, 3.0]]))  # channel 0: 2 -> 1 seen; channel 1: 3 -> 3 new
    assert raw[0] == 0.5


def test_devices_are_independent_and_vectorised() -> None:
    together = make(capacity=3)
    apart = [make(capacity=1) for _ in range(3)]
    rng = np.random.default_rng(0)
    series = rng.integers(0, 4, size=(60, 3)).astype(np.float64)
    slots = np.arange(3, dtype=np.intp)
    for row in series:
        joint = together.update(slots, row[:, None])
        single = [apart[k].update(np.zeros(1, dtype=np.intp), row[k : k + 1, None])[0] for k in range(3)]
        np.testing.assert_array_equal(joint, single)


def test_nan_rows_leave_state_untouched() -> None:
    pattern = make()
    feed(pattern, cycle(3))
    before = {name: pattern.table[name].copy() for name in pattern.table.fields if name.startswith("pat_")}
    raw = feed(pattern, np.array([np.nan]))
    assert np.isnan(raw[0])
    for name, array in before.items():
        np.testing.assert_array_equal(pattern.table[name], array)


def test_state_is_bounded() -> None:
    pattern = make(buckets=6, order=2)
    assert pattern.table["pat_seen"].shape[1:] == (1, 64)
    assert pattern.table["pat_prev"].shape[1:] == (1, 1)


def test_rejects_a_learning_period_shorter_than_a_pattern() -> None:
    with pytest.raises(ValueError, match="learning"):
        make(order=3, learning=2)


def test_no_context_field_unless_asked_for() -> None:
    assert "pat_context" not in make().table
    assert "pat_context" in PatternNovelty(SlotTable(1), 1, 4, 2, 8, context_span=3).table


def test_context_is_the_moving_average_before_the_reading() -> None:
    pattern = PatternNovelty(SlotTable(1), 1, buckets=4, order=2, learning=4, context_span=3)
    values = np.array([0.0, 3.0, 1.0, 2.0, 2.0, 0.0])
    feed(pattern, values)
    expected = values[0]
    for value in values[1:]:
        expected += 0.5 * (value - expected)  # alpha = 2 / (span + 1)
    assert pattern.table["pat_context"][0, 0] == pytest.approx(expected)


def test_a_known_pair_is_novel_where_the_signal_has_not_been_lately() -> None:
    # Range [0, 3] from the first 4 readings; then a long 0/1 alternation in
    # the lower half, a spell at 2, and the same alternation again.
    values = np.concatenate([[0.0, 3.0, 0.0, 3.0], np.tile([0.0, 1.0], 20), np.full(20, 2.0),
                             [0.0, 1.0, 0.0]])
    plain = feed(make(buckets=6, learning=4), values)
    context = feed(PatternNovelty(SlotTable(4), 1, 6, 2, 4, context_span=9, context_buckets=2), values)
    back = len(values) - 3  # the first 0 after the spell
    # (2, 0) was never seen either way.
    assert plain[back] == 1.0
    assert context[back] == 1.0
    # (0, 1) is an old pair, but the average (0.8 * 2 after the 0) is still in the upper half.
    assert plain[back + 1] == 0.0
    assert context[back + 1] == 1.0
    # The alternation itself is learned in its own regime all the same.
    assert (context[20:44] == 0.0).all()


def test_context_multiplies_the_codes() -> None:
    pattern = PatternNovelty(SlotTable(1), 2, buckets=4, order=2, learning=4,
                             context_span=10, context_buckets=3)
    assert pattern.table["pat_seen"].shape == (1, 2, 6**2 * 5)


def test_rejects_an_empty_context() -> None:
    with pytest.raises(ValueError, match="context"):
        PatternNovelty(SlotTable(1), 1, 4, 2, 8, context_span=0)
    with pytest.raises(ValueError, match="context"):
        PatternNovelty(SlotTable(1), 1, 4, 2, 8, context_span=5, context_buckets=0)
