"""The thread that ends a process whose event loop is wedged while the daemon is not live."""

from __future__ import annotations

import threading
import time

from streamer.endpoints import Health
from streamer.loop_guard import MISSED_BEATS, LoopGuard

INTERVAL_S = 0.05


def guard_for(health: Health, calls: list[str]) -> LoopGuard:
    return LoopGuard(health, interval_s=INTERVAL_S, failed_ticks=2, on_wedged=calls.append)


def stalled_health(*, commit_stalled: bool) -> Health:
    """A loop that stopped beating a while ago; the commits stalled too, or not."""
    health = Health(stall_after_s=60.0, commit_stall_after_s=1.0)
    now = time.monotonic()
    health.last_beat = now - 10 * MISSED_BEATS * INTERVAL_S
    health.last_progress = now - (5.0 if commit_stalled else 0.0)
    return health


def test_a_wedged_loop_of_a_daemon_that_is_not_live_ends_it_on_the_second_tick() -> None:
    calls: list[str] = []
    guard = guard_for(stalled_health(commit_stalled=True), calls)
    assert guard.tick() is False
    assert calls == []
    assert guard.tick() is True
    assert len(calls) == 1
    assert calls[0].startswith("no offset committed")


def test_a_quiet_loop_of_a_live_daemon_is_left_alone() -> None:
    # A long snapshot or restore: the loop misses beats, the daemon is still live.
    calls: list[str] = []
    guard = guard_for(stalled_health(commit_stalled=False), calls)
    assert [guard.tick() for _ in range(5)] == [False] * 5
    assert calls == []


def test_a_beating_loop_is_left_to_its_own_watchdog_even_when_not_live() -> None:
    # The loop's watchdog task stops a daemon that is not live, gracefully.
    calls: list[str] = []
    health = stalled_health(commit_stalled=True)
    health.beat()
    guard = guard_for(health, calls)
    assert [guard.tick() for _ in range(5)] == [False] * 5
    assert calls == []


def test_a_recovery_between_ticks_resets_the_count() -> None:
    calls: list[str] = []
    health = stalled_health(commit_stalled=True)
    guard = guard_for(health, calls)
    assert guard.tick() is False
    health.beat()
    assert guard.tick() is False
    health.last_beat -= 10 * MISSED_BEATS * INTERVAL_S
    assert guard.tick() is False
    assert guard.failing == 1
    assert calls == []


def test_the_guard_thread_acts_without_the_loop() -> None:
    wedged = threading.Event()
    reasons: list[str] = []

    def on_wedged(why: str) -> None:
        reasons.append(why)
        wedged.set()

    guard = LoopGuard(stalled_health(commit_stalled=True), interval_s=INTERVAL_S, failed_ticks=2,
                      on_wedged=on_wedged)
    guard.start()
    try:
        assert wedged.wait(10), "the guard never acted"
    finally:
        guard.stop()
    assert len(reasons) == 1
