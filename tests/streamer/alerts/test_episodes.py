import numpy as np
import numpy.typing as npt
import pytest

from streamer.alerts.episodes import EpisodeChanges, EpisodeTracker, alert_id
from streamer.config import AlertsConfig
from streamer.state.slot_table import SlotTable


def tracker(capacity: int = 2, **settings: float) -> EpisodeTracker:
    return EpisodeTracker(SlotTable(capacity), AlertsConfig(**settings))  # type: ignore[arg-type]


class Driver:
    """Feeds one slot's decisions through a tracker, one reading at a time."""

    def __init__(self, capacity: int = 2, **settings: float) -> None:
        self.tracker = tracker(capacity, **settings)
        self.ts = 1000

    def step(self, anomalous: bool, scored: bool = True, slot: int = 0, score: float | None = None
             ) -> EpisodeChanges:
        self.ts += 10
        value = (0.99 if anomalous else 0.1) if score is None else score
        return self.tracker.update(np.array([slot]), np.array([self.ts], dtype=np.int64),
                                   np.array([anomalous]), np.array([value]), np.array([scored]))

    def events(self, decisions: list[bool], scores: list[float] | None = None) -> list[str]:
        """One letter per reading: o(pen), u(pdate), r(esolve) or . (nothing)."""
        out = []
        for i, anomalous in enumerate(decisions):
            changes = self.step(anomalous, score=None if scores is None else scores[i])
            out.append("o" if changes.opened.size else "u" if changes.updated.size
                       else "r" if changes.resolved.size else ".")
        return out

    def state(self) -> tuple[npt.NDArray[np.generic], ...]:
        table = self.tracker.table
        return tuple(table[name].copy() for name in table.fields if name.startswith("ep_"))


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
    assert len(before) == 8
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)
    # nothing open and unscored: still no open
    quiet = Driver()
    assert quiet.step(True, scored=False).opened.size == 0
    assert quiet.tracker.open_count() == 0


def test_slots_are_independent_within_one_update() -> None:
    episodes = tracker(4, resolve_after=1)
    scores = np.array([0.9, 0.1])
    changes = episodes.update(np.array([3, 1]), np.array([50, 60], dtype=np.int64),
                              np.array([True, False]), scores, np.array([True, True]))
    assert changes.opened.tolist() == [0]
    assert changes.episode_start[0] == 50
    assert episodes.table["ep_open"].tolist() == [False, False, False, True]
    changes = episodes.update(np.array([1, 3]), np.array([70, 80], dtype=np.int64),
                              np.array([True, False]), scores[::-1].copy(), np.array([True, True]))
    assert changes.opened.tolist() == [0]
    assert changes.resolved.tolist() == [1]
    assert changes.episode_start.tolist() == [70, 50]


def test_min_duration_opens_after_a_run_and_dates_the_episode_from_its_start() -> None:
    driver = Driver(min_duration=3, resolve_after=2)
    assert driver.events([True, True, False]) == [".", ".", "."]  # a run of 2 is not enough
    run_start = driver.ts + 10
    changes = [driver.step(True) for _ in range(3)]
    assert [c.opened.size for c in changes] == [0, 0, 1]
    assert changes[2].episode_start.tolist() == [run_start]
    assert driver.tracker.open_count() == 1


def test_hysteresis_keeps_an_episode_open_while_the_score_stays_high() -> None:
    high_hold = Driver(resolve_after=2, hold_score=0.6)
    # unflagged but score 0.7 >= hold: stays open; then two calm readings resolve
    assert high_hold.events([True, False, False, False, False, False],
                            [0.99, 0.7, 0.7, 0.7, 0.2, 0.2]) == ["o", ".", ".", ".", ".", "r"]
    no_hold = Driver(resolve_after=2)
    assert no_hold.events([True, False, False], [0.99, 0.7, 0.7]) == ["o", ".", "r"]


def test_cooldown_suppresses_reopening_right_after_a_resolve() -> None:
    driver = Driver(resolve_after=1, cooldown=3)
    assert driver.events([True, False, True, True, True, True]) == ["o", "r", ".", ".", ".", "o"]
    no_cooldown = Driver(resolve_after=1)
    assert no_cooldown.events([True, False, True]) == ["o", "r", "o"]


def test_updates_are_rate_limited_and_only_when_the_score_rises() -> None:
    driver = Driver(resolve_after=5, update_every=2)
    scores = [0.90, 0.95, 0.97, 0.96, 0.99, 0.99, 0.995, 0.1]
    events = driver.events([True] * 7 + [False], scores)
    # 2nd reading rises but comes 1 reading after the open; the 3rd rises 2 after it: update;
    # the 4th does not rise; the 5th rises 2 after the last update: update; the 6th is equal;
    # the 7th rises 2 after the last update: update
    assert events == ["o", ".", "u", ".", "u", ".", "u", "."]
    silent = Driver(resolve_after=5)
    assert "u" not in silent.events([True] * 7, scores[:7])


def test_alert_ids_are_deterministic_and_distinct_per_episode() -> None:
    assert alert_id("pump-1", 1000, "v1") == alert_id("pump-1", 1000, "v1")
    assert len({alert_id("pump-1", 1000, "v1"), alert_id("pump-1", 1001, "v1"),
                alert_id("pump-2", 1000, "v1"), alert_id("pump-1", 1000, "v2")}) == 4


def test_skipping_quiet_rounds_changes_nothing_over_a_random_schedule(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The shortcut for rounds where nothing is flagged, open, running or cooling down
    # must leave the same state and events as the full update.
    settings = {"min_duration": 2, "resolve_after": 3, "cooldown": 4, "update_every": 2, "hold_score": 0.5}
    fast, full = tracker(8, **settings), tracker(8, **settings)
    monkeypatch.setattr(full, "_all_quiet", lambda *_: False)
    rng = np.random.default_rng(3)
    quiet_rounds = opened = 0
    for step in range(600):
        slots = rng.choice(8, size=int(rng.integers(1, 9)), replace=False)
        n = len(slots)
        ts = np.full(n, 1000 + 10 * step, dtype=np.int64)
        anomalous = rng.random(n) < (0.3 if step % 50 < 10 else 0.0)
        score = np.where(anomalous, 0.9, rng.random(n) * 0.7)
        scored = rng.random(n) < 0.95
        was = fast.table["ep_open"][slots].any() | fast.table["ep_run"][slots].any()
        quiet_rounds += int(not (anomalous.any() or was or fast.table["ep_cooldown"][slots].any()))
        got, want = (t.update(slots, ts, anomalous, score, scored) for t in (fast, full))
        opened += got.opened.size
        for name in ("opened", "updated", "resolved", "episode_start"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    for name in fast.table.fields:
        np.testing.assert_array_equal(fast.table[name], full.table[name])
    assert quiet_rounds > 100 and opened > 10  # both paths were taken, often
