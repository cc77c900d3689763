import numpy as np

from streamer.state.ring_buffer import RingBuffers
from streamer.state.slot_table import SlotTable


def make(window: int = 3, channels: int = 1, capacity: int = 4) -> RingBuffers:
    return RingBuffers(SlotTable(capacity), window=window, channels=channels)


def col(value: float) -> np.ndarray:
    return np.array([[value]], dtype=np.float32)


def test_unfilled_entries_are_nan() -> None:
    rings = make()
    slots = np.array([0])
    rings.append(slots, col(1.0))
    window = rings.windows(slots)
    assert window.shape == (1, 3, 1)
    assert rings.filled(slots).tolist() == [1]
    # oldest first: the two unwritten entries come before the reading
    assert np.isnan(window[0, :2, 0]).all()
    assert window[0, 2, 0] == 1.0


def test_wraparound_keeps_last_window_oldest_first() -> None:
    rings = make(window=3)
    slots = np.array([2])
    for value in (1.0, 2.0, 3.0, 4.0, 5.0):
        rings.append(slots, col(value))
    assert rings.windows(slots)[0, :, 0].tolist() == [3.0, 4.0, 5.0]
    assert rings.filled(slots).tolist() == [3]


def test_slots_are_independent_and_untouched_slots_stay_empty() -> None:
    rings = make(window=2, capacity=4)
    rings.append(np.array([0, 3]), np.array([[1.0], [10.0]], dtype=np.float32))
    rings.append(np.array([3]), col(11.0))
    windows = rings.windows(np.array([3, 0, 1]))
    assert windows[0, :, 0].tolist() == [10.0, 11.0]
    assert np.isnan(windows[1, 0, 0]) and windows[1, 1, 0] == 1.0
    assert np.isnan(windows[2]).all()
    assert rings.filled(np.array([0, 1, 3])).tolist() == [1, 0, 2]


def test_multi_channel_rows() -> None:
    rings = make(window=2, channels=3)
    slots = np.array([1])
    rings.append(slots, np.array([[1.0, 2.0, 3.0]], dtype=np.float32))
    rings.append(slots, np.array([[4.0, 5.0, 6.0]], dtype=np.float32))
    rings.append(slots, np.array([[7.0, 8.0, 9.0]], dtype=np.float32))
    assert rings.windows(slots)[0].tolist() == [[4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]


def test_rings_survive_table_growth() -> None:
    table = SlotTable(1)
    rings = RingBuffers(table, window=2, channels=1)
    rings.append(np.array([0]), col(1.5))
    table.grow(3)
    rings.append(np.array([0, 2]), np.array([[2.5], [9.0]], dtype=np.float32))
    assert rings.windows(np.array([0]))[0, :, 0].tolist() == [1.5, 2.5]
    assert rings.filled(np.array([0, 1, 2])).tolist() == [2, 0, 1]
