"""The garbage-collector settings of `streamer run` and of the e2e bench's raw path."""

from __future__ import annotations

import gc

from streamer.config import load_config
from streamer.gc_tuning import tuned_collector


def test_tuned_collector_freezes_start_up_objects_raises_gen0_and_restores_both() -> None:
    before = gc.get_threshold()
    with tuned_collector(50_000):
        assert gc.get_threshold() == (50_000, before[1], before[2])
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_null_threshold_keeps_pythons_thresholds_but_still_freezes() -> None:
    before = gc.get_threshold()
    with tuned_collector(None):
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_the_default_config_tunes_and_null_turns_it_off() -> None:
    assert load_config(environ={}).runtime.gc_gen0_threshold == 50_000
    off = load_config(environ={"STREAMER__RUNTIME__GC_GEN0_THRESHOLD": "null"})
    assert off.runtime.gc_gen0_threshold is None
