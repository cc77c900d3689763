"""Helpers for integration tests that run daemons in process (``Application.run`` as tasks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest


async def until(condition: Callable[[], bool], timeout_s: float, message: str,
                *tasks: asyncio.Task[int]) -> None:
    """Wait for ``condition``; fail with ``message`` after ``timeout_s`` or once a daemon task ends."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for task in tasks:
            assert not task.done(), f"{message}: daemon exited with {task.result()}"
        if condition():
            return
        await asyncio.sleep(0.05)
    pytest.fail(message)
