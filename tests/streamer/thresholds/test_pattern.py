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
