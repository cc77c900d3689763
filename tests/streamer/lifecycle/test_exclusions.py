"""What retraining leaves out: alert episodes, confirmed and missed anomalies, with a margin."""

from __future__ import annotations

import uuid

import numpy as np

from streamer.codec import Alert
from streamer.feedback.messages import Feedback
from streamer.lifecycle.exclusions import OPEN_END_MS, Window, episodes, excluded, exclusion_windows


def alert(alert_id: str, event: str, device: str, ts: int, start: int, version: str = "m1") -> Alert:
    return Alert(alert_id=alert_id, event=event, device_id=device, ts=ts,  # type: ignore[arg-type]
                 episode_start_ts=start, channel="value", actual=1.0, forecast=0.0, residual=1.0,
                 smoothed_residual=1.0, threshold=0.5, score=0.99, method="zscore", model_version=version,
                 processing_ms=1.0, latency_ms=1.0)


def test_episode_runs_from_its_start_to_its_last_event_and_stays_open_without_a_resolve() -> None:
    closed, still_open = str(uuid.uuid4()), str(uuid.uuid4())
    found = episodes([
        alert(closed, "open", "d1", 1_000, 1_000), alert(still_open, "open", "d2", 1_500, 1_400),
        alert(closed, "update", "d1", 1_800, 1_000), alert(closed, "resolve", "d1", 2_500, 1_000),
    ])
    assert [(e.alert_id, e.device_id, e.start_ms, e.end_ms) for e in found] == [
        (closed, "d1", 1_000, 2_500), (still_open, "d2", 1_400, OPEN_END_MS)]


def test_a_resolve_alone_still_gives_the_whole_episode() -> None:
    # The open event may be older than what was read; every event carries the episode's start.
    (found,) = episodes([alert("a", "resolve", "d", 9_000, 5_000)])
    assert (found.start_ms, found.end_ms) == (5_000, 9_000)


def test_windows_widen_episodes_and_missed_reports_by_the_margin() -> None:
    found = episodes([alert("a", "open", "d1", 1_000, 1_000), alert("a", "resolve", "d1", 2_000, 1_000),
                      alert("b", "open", "d2", 5_000, 5_000)])
    missed = Feedback(kind="missed", device_id="d3", start_ts=3_000, end_ts=3_500)
    windows = exclusion_windows(found, [missed], margin_ms=100)
    assert windows == [Window("d1", 900, 2_100, "alert"), Window("d2", 4_900, OPEN_END_MS, "alert"),
                       Window("d3", 2_900, 3_600, "missed")]


def test_false_alarms_stay_in_only_when_configured_and_confirmed_wins() -> None:
    found = episodes([alert("fa", "resolve", "d1", 2_000, 1_000),
                      alert("both", "resolve", "d2", 2_000, 1_000),
                      alert("conf", "resolve", "d3", 2_000, 1_000)])
    feedback = [Feedback(kind="false_alarm", device_id="d1", alert_id="fa"),
                Feedback(kind="false_alarm", device_id="d2", alert_id="both"),
                Feedback(kind="confirmed", device_id="d2", alert_id="both"),
                Feedback(kind="confirmed", device_id="d3", alert_id="conf")]
    assert {w.device_id for w in exclusion_windows(found, feedback, margin_ms=0)} == {"d1", "d2", "d3"}
    kept_in = exclusion_windows(found, feedback, margin_ms=0, include_false_alarms=True)
    assert {w.device_id for w in kept_in} == {"d2", "d3"}


def test_excluded_marks_the_rows_of_the_device_inside_a_window_and_counts_by_kind() -> None:
    ids = np.array(["d1"] * 6 + ["d2"] * 6)
    ts = np.tile(np.arange(6) * 100, 2).astype(np.int64)
    windows = [Window("d1", 100, 250, "alert"), Window("d1", 200, 400, "missed"),
               Window("d2", 500, OPEN_END_MS, "alert"), Window("d9", 0, 1_000, "alert")]
    mask, counts = excluded(ids, ts, windows)
    assert mask.tolist() == [False, True, True, True, True, False] + [False] * 5 + [True]
    # A row in two windows counts once, for the first.
    assert counts == {"alert": 3, "missed": 2}


def test_nothing_is_excluded_without_windows() -> None:
    mask, counts = excluded(np.array(["a", "b"]), np.array([1, 2]), [])
    assert not mask.any() and not counts
