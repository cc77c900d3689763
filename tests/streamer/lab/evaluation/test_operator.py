"""The simulated operator of ``streamer evaluate ... --operator``: its answers, their timing, their effect."""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import pytest

from streamer.alerts.episodes import alert_id
from streamer.cli import main
from streamer.codec import Alert
from streamer.config import Config
from streamer.feedback.messages import Feedback
from streamer.lab.evaluation.events import EventCounts, Span, count_events, episode_spans, total
from streamer.lab.evaluation.operator import Operator
from streamer.lab.evaluation.replay import Series, replay
from tests.streamer.lab.evaluation.test_skab import write_corpus as write_skab
from tests.streamer.lab.evaluation.test_telemanom import write_corpus as write_telemanom

START_MS = 1_600_000_000_000


def baseline_config(max_batch: int = 4096) -> Config:
    config = Config()
    return msgspec.structs.replace(
        config, predictor=msgspec.structs.replace(config.predictor, kind="baseline"),
        batching=msgspec.structs.replace(config.batching, max_batch=max_batch))


def flat_series(device_id: str, n: int = 500) -> Series:
    return Series(device_id, START_MS + np.arange(n, dtype=np.int64) * 1000, np.zeros((n, 1)))


def alert(series: Series, event: str, row: int, start: int) -> Alert:
    ts, first = int(series.ts_ms[row]), int(series.ts_ms[start])
    return Alert(alert_id=alert_id(series.device_id, first, "v1"), event=event,  # type: ignore[arg-type]
                 device_id=series.device_id, ts=ts, episode_start_ts=first, channel="value", actual=1.0,
                 forecast=0.0, residual=1.0, smoothed_residual=1.0, threshold=0.5, score=0.99,
                 method="zscore", model_version="v1", processing_ms=0.0, latency_ms=0.0)


def fed_through(row: int, devices: int = 2) -> npt.NDArray[np.int64]:
    return np.full(devices, row, dtype=np.int64)


def test_an_alert_inside_a_labelled_window_is_confirmed_after_exactly_delay_readings() -> None:
    inside, outside = flat_series("a"), flat_series("b")
    operator = Operator([inside, outside], {"a": [(100, 150)]}, delay=10)
    opened = [alert(inside, "open", 105, 104), alert(outside, "open", 105, 105)]
    assert operator.observe(opened, fed_through(105)) == []
    assert operator.limit() == 115  # the next batch ends with the row the answers are due at
    assert operator.observe([], fed_through(114)) == []
    answers = operator.observe([], fed_through(115))
    assert [(m.kind, m.device_id, m.alert_id) for m in answers] == [
        ("confirmed", "a", opened[0].alert_id), ("false_alarm", "b", opened[1].alert_id)]
    assert operator.observe([], fed_through(499)) == []  # window (100, 150) was detected: no report


def test_an_answer_waits_for_its_device_when_a_batch_ends_inside_the_row() -> None:
    first, second = flat_series("a"), flat_series("b")
    operator = Operator([first, second], {}, delay=3)
    operator.observe([alert(second, "open", 20, 20)], fed_through(20))
    assert operator.observe([], np.array([23, 22])) == []  # "b" has not had its reading 23 yet
    assert [m.kind for m in operator.observe([], np.array([23, 23]))] == ["false_alarm"]


def test_the_episode_is_judged_as_far_as_it_has_gone() -> None:
    early, resolved = flat_series("a"), flat_series("b")
    operator = Operator([early, resolved], {"a": [(200, 220)], "b": [(100, 120)]}, delay=50)
    # "a" opens 60 readings before its labelled window: at the answer (row 190) nothing overlaps yet.
    # "b" opened inside its window and resolved there before the answer was due.
    operator.observe([alert(early, "open", 140, 140), alert(resolved, "open", 110, 110),
                      alert(resolved, "resolve", 130, 110)], fed_through(140))
    kinds = {m.device_id: m.kind for m in operator.observe([], fed_through(190))}
    assert kinds == {"a": "false_alarm", "b": "confirmed"}


def test_an_undetected_window_is_reported_missed_delay_readings_after_its_end() -> None:
    device = flat_series("a")
    operator = Operator([device], {"a": [(300, 320)]}, delay=25)
    assert operator.limit() == 24  # at most delay rows ahead of what was scored
    assert operator.observe([], np.array([344])) == []
    (message,) = operator.observe([], np.array([345]))
    assert (message.kind, message.device_id) == ("missed", "a")
    assert (message.start_ts, message.end_ts) == (int(device.ts_ms[300]), int(device.ts_ms[320]))


def test_messages_due_after_the_last_reading_are_not_sent() -> None:
    device = flat_series("a", n=100)
    operator = Operator([device], {"a": [(90, 95)]}, delay=10)
    operator.observe([alert(device, "open", 95, 95)], np.array([95]))
    assert operator.observe([], np.array([99])) == []
    assert operator.unsent == 2


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Operator([flat_series("a")], {}, delay=0)
    with pytest.raises(ValueError, match="not replayed"):
        Operator([flat_series("a")], {"z": [(1, 2)]}, delay=5)


# ---------------------------------------------------------------- through the replay

# Per device: spikes that each beat the last a little (so the record gate lets
# every one alert), outside any label, then one labelled level shift.
SPIKE_ROWS = [600 + 450 * k for k in range(7)]
LABEL: Span = (3800, 3809)


def fleet(devices: int = 4, n: int = 4000) -> tuple[list[Series], dict[str, list[Span]]]:
    rng = np.random.default_rng(1)
    series, labels = [], {}
    for d in range(devices):
        values = np.sin(np.arange(n) / 20.0) + rng.normal(0, 0.1, n)
        for k, row in enumerate(SPIKE_ROWS):
            values[row] += 0.8 + 0.02 * k
        values[LABEL[0]:LABEL[1] + 1] += 3.0
        series.append(Series(f"d{d}", START_MS + np.arange(n, dtype=np.int64) * 1000, values[:, None]))
        labels[f"d{d}"] = [LABEL]
    return series, labels


def counts(series: Sequence[Series], labels: dict[str, list[Span]], alerts: Sequence[Alert]) -> EventCounts:
    spans = episode_spans(alerts, {item.device_id: item.ts_ms for item in series})
    return total(count_events(labels[item.device_id], spans.get(item.device_id, [])) for item in series)


class Spy:
    """The operator, recording each device's last fed row when each message is handed out."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self.handed: list[tuple[Feedback, int]] = []
        self.ids = {f"d{d}": d for d in range(4)}

    def limit(self) -> int:
        return self.operator.limit()

    def observe(self, alerts: Sequence[Alert], fed: npt.NDArray[np.int64]) -> list[Feedback]:
        messages = self.operator.observe(alerts, fed)
        for message in messages:
            assert message.device_id is not None
            self.handed.append((message, int(fed[self.ids[message.device_id]])))
        return messages


def test_feedback_is_applied_right_after_the_reading_it_is_due_at_and_cuts_false_alarms() -> None:
    series, labels = fleet()
    config = baseline_config()
    without = replay(config, series)
    spy = Spy(Operator(series, labels, delay=10))
    answered = replay(config, series, feedback=spy)

    opened = {a.alert_id: int(np.searchsorted(series[int(a.device_id[1:])].ts_ms, a.ts))
              for a in answered.alerts if a.event == "open"}
    assert spy.handed
    for message, fed in spy.handed:
        assert message.alert_id is not None
        assert fed == opened[message.alert_id] + 10  # not a row later: the batch ended there
    assert answered.feedback["applied:false_alarm"] > 0
    assert answered.feedback["applied:confirmed"] == len(series)
    assert not [key for key in answered.feedback if key.startswith("rejected")]

    before, after = counts(series, labels, without.alerts), counts(series, labels, answered.alerts)
    assert after.tp == before.tp == len(series)
    assert after.fp < before.fp


def calm(devices: int, n: int = 1500) -> list[Series]:
    return [Series(f"d{d}", START_MS + np.arange(n, dtype=np.int64) * 1000,
                   np.sin(np.arange(n) / (20.0 + d))[:, None]) for d in range(devices)]


def test_an_operator_with_nothing_to_say_changes_nothing() -> None:
    quiet = calm(3)
    without = replay(baseline_config(max_batch=64), quiet)
    answered = replay(baseline_config(max_batch=64), quiet, feedback=Operator(quiet, {}, delay=7))
    assert not without.alerts and not answered.alerts and not answered.feedback
    for plain, operated in zip(without.scores, answered.scores, strict=True):
        np.testing.assert_array_equal(plain, operated)


def test_a_missed_window_is_reported_to_the_pipeline() -> None:
    series = calm(2)
    labels = {"d0": [(1000, 1010)], "d1": [(1000, 1010)]}  # nothing happens there
    answered = replay(baseline_config(), series, feedback=Operator(series, labels, delay=5))
    assert answered.feedback["applied:missed"] == 2


# ---------------------------------------------------------------- the commands

FIGURES = {"precision", "recall", "f1", "false_positives"}


def check_section(document: dict[str, Any], delay: int) -> dict[str, Any]:
    section: dict[str, Any] = document["operator"]
    assert section["delay"] == delay
    assert set(section["without"]) >= FIGURES and set(section["with"]) >= FIGURES
    return section


def test_telemanom_command_reports_without_and_with_the_operator(tmp_path: Path) -> None:
    write_telemanom(tmp_path / "corpus")
    plain, operated = tmp_path / "plain.json", tmp_path / "operated.json"
    common = ["evaluate", "telemanom", "--data", str(tmp_path / "corpus"), "--labels",
              str(tmp_path / "corpus" / "labeled_anomalies.csv"), "--bundle", "default"]
    assert main([*common, "--json", str(plain)]) == 0
    assert main([*common, "--operator", "10", "--json", str(operated)]) == 0
    before, after = json.loads(plain.read_text()), json.loads(operated.read_text())
    section = check_section(after, 10)
    assert "operator" not in before
    # Without the operator: the evaluation as it was.
    assert {key: after[key] for key in ("tp", "fp", "fn", "precision")} == \
        {key: before[key] for key in ("tp", "fp", "fn", "precision")}
    assert section["without"]["false_positives"] == before["fp"]
    assert section["without"]["precision"] == before["precision"] and section["without"]["f1"] == before["f1"]
    assert sum(section["feedback"].values()) > 0


def test_nab_command_reports_window_level_figures_and_scores(tmp_path: Path) -> None:
    write_nab(tmp_path / "nab")
    out_json = tmp_path / "nab.json"
    assert main(["evaluate", "nab", "--data", str(tmp_path / "nab"), "--out", str(tmp_path / "out"),
                 "--bundle", "default", "--operator", "5", "--json", str(out_json)]) == 0
    document = json.loads(out_json.read_text())
    section = check_section(document, 5)
    assert section["without"]["scores"] == document["scores"]
    assert section["without"]["tp"] + section["without"]["fn"] == 2  # two windows


def test_skab_command_reports_row_level_figures(tmp_path: Path) -> None:
    write_skab(tmp_path / "corpus")
    out_json = tmp_path / "skab.json"
    assert main(["evaluate", "skab", "--data", str(tmp_path / "corpus"), "--epochs", "1", "--units", "4",
                 "--window", "16", "--stride", "8", "--out", str(tmp_path / "bundle"), "--operator", "10",
                 "--json", str(out_json)]) == 0
    document = json.loads(out_json.read_text())
    section = check_section(document, 10)
    assert section["without"]["false_positives"] == document["confusion"]["fp"]
    assert section["without"]["f1"] == document["f1"]
    assert set(section["with"]["events"]) >= FIGURES


def test_commands_refuse_a_delay_below_one(tmp_path: Path) -> None:
    assert main(["evaluate", "skab", "--data", str(tmp_path), "--bundle", "default", "--operator", "0"]) == 2


def write_nab(root: Path) -> None:
    """Two NAB-layout series of 1500 five-minute rows, each with a labelled spike in its window."""
    rng = np.random.default_rng(4)
    windows = {}
    start = np.datetime64("2015-01-01T00:00:00", "s")
    for index, key in enumerate(("realTest/a.csv", "realTest/b.csv")):
        values = 10 + np.sin(np.arange(1500) / (12.0 + index)) + rng.normal(0, 0.1, 1500)
        values[1200] += 8.0
        stamps = [str(start + np.timedelta64(300 * row, "s")).replace("T", " ") for row in range(1500)]
        path = root / "data" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("timestamp,value\n" + "".join(f"{s},{v:.4f}\n" for s, v in zip(stamps, values,
                                                                                        strict=True)))
        windows[key] = [[f"{stamps[1150]}.000000", f"{stamps[1250]}.000000"]]
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))
