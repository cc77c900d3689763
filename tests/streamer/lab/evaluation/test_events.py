import numpy as np

from streamer.codec import Alert
from streamer.lab.evaluation.events import EventCounts, clip_spans, count_events, episode_spans, total


def alert(event: str, device: str, ts: int, start: int) -> Alert:
    return Alert(alert_id=f"{device}-{start}", event=event, device_id=device, ts=ts,  # type: ignore[arg-type]
                 episode_start_ts=start, channel="value", actual=1.0, forecast=0.0, residual=1.0,
                 smoothed_residual=1.0, threshold=0.5, score=0.9, method="zscore", model_version="v",
                 processing_ms=0.0, latency_ms=0.0)


def test_one_true_positive_per_label_and_every_stray_detection_is_false() -> None:
    counts = count_events([(10, 20), (50, 60), (70, 75)], [(12, 13), (14, 30), (0, 2), (74, 80)])
    assert counts == EventCounts(tp=2, fp=1, fn=1)
    # TP counts labels (two found), FP counts detections overlapping no label ((0, 2) only)
    assert counts.precision == 2 / 3
    assert round(counts.recall, 6) == round(2 / 3, 6)


def test_rates_without_events_are_zero_not_errors() -> None:
    empty = count_events([], [])
    assert (empty.precision, empty.recall, empty.f1) == (0.0, 0.0, 0.0)
    assert count_events([(1, 2)], []).as_dict()["fn"] == 1


def test_total_adds_counts() -> None:
    summed = total([EventCounts(1, 2, 3), EventCounts(4, 0, 1)])
    assert summed == EventCounts(5, 2, 4)
    assert round(summed.f1, 4) == round(2 * (5 / 7) * (5 / 9) / ((5 / 7) + (5 / 9)), 4)


def test_episode_spans_from_open_and_resolve_events() -> None:
    ts = {"a": np.arange(0, 1000, 10, dtype=np.int64), "b": np.arange(0, 500, 10, dtype=np.int64)}
    alerts = [alert("open", "a", 120, 100), alert("resolve", "a", 200, 100),
              alert("open", "b", 400, 400), alert("update", "b", 420, 400)]
    spans = episode_spans(alerts, ts)
    assert spans == {"a": [(10, 20)], "b": [(40, 49)]}  # b never resolves: runs to the end


def test_clip_spans_keeps_the_part_inside_and_shifts_it() -> None:
    assert clip_spans([(0, 3), (5, 9)], 4, 20, shift=4) == [(1, 5)]
