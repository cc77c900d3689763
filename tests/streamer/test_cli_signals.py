"""SIGTERM/SIGINT: the first asks for a graceful drain, a second one exits at once."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sized

import pytest

from streamer import cli


async def _until(condition: Sized) -> None:
    for _ in range(500):
        if len(condition):
            return
        await asyncio.sleep(0.01)


async def test_first_signal_drains_and_a_second_exits_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    stops: list[str] = []
    monkeypatch.setattr(os, "_exit", exits.append)  # the module cli calls through
    loop = asyncio.get_running_loop()
    cli.install_signal_handlers(lambda: stops.append("stop"))
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        await _until(stops)
        assert stops == ["stop"]
        assert exits == []
        os.kill(os.getpid(), signal.SIGINT)
        await _until(exits)
        assert exits == [cli.FORCED_EXIT]
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)
