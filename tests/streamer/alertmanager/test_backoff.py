from __future__ import annotations

import random

import pytest

from streamer.alertmanager.backoff import Backoff


def test_the_bound_doubles_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 4.0, draw=lambda low, high: high)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.attempts == 6


def test_delays_are_jittered_between_zero_and_the_bound() -> None:
    rng = random.Random(3)
    backoff = Backoff(1.0, 8.0, draw=rng.uniform)
    delays = []
    for attempt in range(200):
        bound = backoff.bound()
        delay = backoff.next_delay()
        assert 0.0 <= delay <= bound == min(8.0, 2.0 ** attempt)
        delays.append(delay)
    assert len(set(delays)) == len(delays)  # no two bridges retry in step


def test_reset_starts_again_and_a_long_outage_never_overflows() -> None:
    backoff = Backoff(0.1, 30.0, draw=lambda low, high: high)
    for _ in range(5000):
        backoff.next_delay()
    assert backoff.next_delay() == 30.0
    backoff.reset()
    assert backoff.next_delay() == 0.1


@pytest.mark.parametrize(("initial", "cap"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_invalid_bounds_are_refused(initial: float, cap: float) -> None:
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial, cap)
