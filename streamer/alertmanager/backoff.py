"""Retry delays: exponential, capped, with full jitter.

Full jitter (a uniform draw between 0 and the exponential bound, as in the
AWS architecture blog's "Exponential Backoff and Jitter") keeps several
bridges that lost Alertmanager at the same moment from retrying in step.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays before each retry of one operation; :meth:`reset` after a success.

    The n-th delay (from 0) is drawn uniformly from ``[0, min(cap, initial * 2**n)]``.

    >>> backoff = Backoff(initial_s=1.0, max_s=5.0, draw=lambda low, high: high)
    >>> [backoff.next_delay() for _ in range(5)]
    [1.0, 2.0, 4.0, 5.0, 5.0]
    >>> backoff.reset(); backoff.next_delay()
    1.0
    """

    def __init__(self, initial_s: float, max_s: float,
                 draw: Callable[[float, float], float] = random.uniform) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {initial_s} and {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self._draw = draw
        self.attempts = 0

    def bound(self) -> float:
        """The upper bound of the next delay."""
        # min() before the power would overflow after ~1000 attempts.
        return min(self.max_s, self.initial_s * 2.0 ** min(self.attempts, 64))

    def next_delay(self) -> float:
        """The delay before the next retry (and count the attempt)."""
        delay = self._draw(0.0, self.bound())
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Start again from ``initial_s``."""
        self.attempts = 0
