import numpy as np
import numpy.typing as npt

from streamer.alerts.episodes import EpisodeChanges, EpisodeTracker, alert_id
from streamer.state.slot_table import SlotTable


class Driver:
    """Feeds one slot's decisions through a tracker, one reading at a time."""

    def __init__(self, resolve_after: int = 2, capacity: int = 2) -> None:
        self.tracker = EpisodeTracker(SlotTable(capacity), resolve_after)
        self.ts = 1000

    def step(self, anomalous: bool, scored: bool = True, slot: int = 0) -> EpisodeChanges:
        self.ts += 10
        return self.tracker.update(np.array([slot]), np.array([self.ts], dtype=np.int64),
                                   np.array([anomalous]), np.array([scored]))

    def state(self) -> tuple[npt.NDArray[np.generic], ...]:
        table = self.tracker.table
        return tuple(table[name].copy() for name in ("ep_open", "ep_start_ts", "ep_calm"))


def test_open_continue_resolve_reopen() -> None:
    driver = Driver(resolve_after=2)
    opened = driver.step(True)
    assert opened.opened.tolist() == [0] and opened.resolved.size == 0
    first_start = driver.ts
    assert opened.episode_start.tolist() == [first_start]
    assert driver.tracker.open_count() == 1

    cont = driver.step(True)  # continues: no new open
    assert cont.opened.size == 0 and cont.resolved.size == 0
    assert cont.episode_start.tolist() == [first_start]

    assert driver.step(False).resolved.size == 0  # calm 1
    relapse = driver.step(True)  # calm counter resets, still the same episode
    assert relapse.opened.size == 0
    assert driver.step(False).resolved.size == 0  # calm 1
    resolved = driver.step(False)  # calm 2 -> resolve
    assert resolved.resolved.tolist() == [0]
    assert resolved.episode_start.tolist() == [first_start]
    assert driver.tracker.open_count() == 0

    assert driver.step(False).resolved.size == 0  # nothing open: nothing resolves
    reopened = driver.step(True)
    assert reopened.opened.tolist() == [0]
    assert reopened.episode_start.tolist() == [driver.ts]
    assert driver.ts != first_start


def test_unscored_rows_leave_state_unchanged() -> None:
    driver = Driver(resolve_after=1)
    driver.step(True)
    before = driver.state()
    for anomalous in (True, False, False):
        changes = driver.step(anomalous, scored=False)
        assert changes.opened.size == 0 and changes.resolved.size == 0
    after = driver.state()
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)
    # nothing open and unscored: still no open
    quiet = Driver()
    assert quiet.step(True, scored=False).opened.size == 0
    assert quiet.tracker.open_count() == 0


def test_slots_are_independent_within_one_update() -> None:
    tracker = EpisodeTracker(SlotTable(4), resolve_after=1)
    changes = tracker.update(np.array([3, 1]), np.array([50, 60], dtype=np.int64),
                             np.array([True, False]), np.array([True, True]))
    assert changes.opened.tolist() == [0]
    assert changes.episode_start[0] == 50
    assert tracker.table["ep_open"].tolist() == [False, False, False, True]
    changes = tracker.update(np.array([1, 3]), np.array([70, 80], dtype=np.int64),
                             np.array([True, False]), np.array([True, True]))
    assert changes.opened.tolist() == [0]
    assert changes.resolved.tolist() == [1]
    assert changes.episode_start.tolist() == [70, 50]


def test_alert_id_is_deterministic_and_distinct() -> None:
    base = alert_id("pump-17", 1_700_000_000_000, "v1")
    assert base == alert_id("pump-17", 1_700_000_000_000, "v1")
    others = {
        alert_id("pump-17", 1_700_000_000_001, "v1"),
        alert_id("pump-17", 1_700_000_000_000, "v2"),
        alert_id("pump-18", 1_700_000_000_000, "v1"),
        # the separator keeps fields from running into each other
        alert_id("pump-1", 71_700_000_000_000, "v1"),
    }
    assert base not in others
    assert len(others) == 4
    # pinned: ids must stay identical across processes and releases
    assert base == "c11a18cb-c456-5ab2-bdfc-7680309bee9f"
