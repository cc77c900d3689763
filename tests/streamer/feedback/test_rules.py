"""Per-device rules from configuration: validated at load, applied to the devices they match only."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

from streamer.codec import Alert, ReadingBatch
from streamer.config import (
    MaintenanceWindow,
    RecordGateConfig,
    RuleConfig,
    RuleThresholds,
    ZScoreConfig,
    load_config,
)
from streamer.errors import ConfigError
from streamer.feedback.rules import NO_RULE, RuleBook
from streamer.scoring.pipeline import ScoreResult, ScoringPipeline
from tests.fakes import offline_config

TUESDAY_2213_UTC = 1_700_000_000_000  # 2023-11-14T22:13:20Z
DEVICES = ("pump-1", "fan-1")


def _config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_rules_are_validated_at_load_with_the_key_and_the_file(tmp_path: Path) -> None:
    path = _config_file(tmp_path, "readings: {channels: [temp, vibration]}\n"
                                  "rules:\n  - {devices: 'pump-*', muted_channels: [humidity]}\n")
    with pytest.raises(ConfigError, match=r"config.yaml.*rules\[0\].muted_channels.*humidity"):
        load_config(path)
    path = _config_file(tmp_path, "rules:\n  - devices: 'pump-*'\n"
                                  "    maintenance: [{start: '2:00', end: '04:00'}]\n")
    with pytest.raises(ConfigError, match=r"config.yaml.*rules.0.maintenance.0.*'2:00' is not a time of day"):
        load_config(path)
    path = _config_file(tmp_path, "rules:\n  - {devices: 'pump-*', sensitivity: 0}\n")
    with pytest.raises(ConfigError, match=r"rules.0.sensitivity"):
        load_config(path)
    path = _config_file(tmp_path, "rules:\n  - {devices: 'pump-*', thresholds: {method: median}}\n")
    with pytest.raises(ConfigError, match=r"rules.0.thresholds.method"):
        load_config(path)


def test_the_first_matching_rule_applies() -> None:
    book = RuleBook([RuleConfig(devices="pump-1*"), RuleConfig(devices="pump-*")], ["value"],
                    offline_config().thresholds)
    assert book.rule_of(["pump-17", "pump-2", "fan-1"]).tolist() == [0, 1, NO_RULE]


def test_a_maintenance_window_crossing_midnight_covers_both_days() -> None:
    book = RuleBook([RuleConfig(devices="*", maintenance=[MaintenanceWindow(start="22:00", end="02:00",
                                                                            days=["tue"])])],
                    ["value"], offline_config().thresholds)
    hour = 3_600_000
    ts = np.array([TUESDAY_2213_UTC, TUESDAY_2213_UTC + 3 * hour, TUESDAY_2213_UTC + 5 * hour,
                   TUESDAY_2213_UTC - 2 * hour, TUESDAY_2213_UTC + 24 * hour])
    # Tue 22:13, Wed 01:13 (the same window), Wed 03:13, Tue 20:13, Wed 22:13 (a Wednesday: not listed).
    assert book.in_maintenance(np.zeros(5, np.int64), ts).tolist() == [True, True, False, False, False]


class Fleet:
    """``pump-1`` and ``fan-1`` read the same quiet signal; spikes hit both."""

    def __init__(self, rules: list[RuleConfig], channels: tuple[str, ...] = ("value",)) -> None:
        config = offline_config(thresholds={"record_gate": RecordGateConfig(enabled=False)},
                                readings={"channels": list(channels)})
        self.pipeline = ScoringPipeline(msgspec.structs.replace(config, rules=rules))
        self.channels = len(channels)
        self.ts = TUESDAY_2213_UTC
        self.step = 0
        self.rng = np.random.default_rng(5)

    def run(self, readings: int,
            spikes: dict[int, np.ndarray | float] | None = None) -> tuple[list[Alert], ScoreResult]:
        alerts: list[Alert] = []
        suppressed = ScoreResult()
        for k in range(readings):
            self.ts += 1000
            self.step += 1
            phase = self.step / 10.0
            values = np.sin(phase) + self.rng.normal(0.0, 0.05, (len(DEVICES), self.channels))
            values = values + np.asarray((spikes or {}).get(k, 0.0))
            batch = ReadingBatch(device_ids=list(DEVICES), ts_ms=np.full(len(DEVICES), self.ts, np.int64),
                                 values=values, fetched_at=np.zeros(len(DEVICES)),
                                 record_index=np.arange(len(DEVICES)))
            result = self.pipeline.score(batch)
            alerts += result.alerts
            for reason, count in result.suppressed.items():
                suppressed.suppressed[reason] = suppressed.suppressed.get(reason, 0) + count
        return alerts, suppressed


def _opened(alerts: list[Alert]) -> set[str]:
    return {alert.device_id for alert in alerts if alert.event == "open"}


def test_a_maintenance_window_silences_only_the_devices_of_its_rule() -> None:
    window = MaintenanceWindow(start="22:00", end="23:00", days=["tue"])
    fleet = Fleet([RuleConfig(devices="pump-*", maintenance=[window])])
    fleet.run(300)
    alerts, totals = fleet.run(200, {100: 3.0})  # Tue 22:18-22:21: inside the window
    assert _opened(alerts) == {"fan-1"}
    assert totals.suppressed["maintenance"] >= 1
    fleet.ts += 45 * 60_000  # a gap in the readings: past 23:00
    alerts, _ = fleet.run(200, {100: 3.0})
    assert _opened(alerts) == {"pump-1", "fan-1"}


def test_a_muted_channel_raises_no_alert_the_others_do() -> None:
    fleet = Fleet([RuleConfig(devices="pump-*", muted_channels=["vibration"])],
                  channels=("temp", "vibration"))
    fleet.run(300)
    alerts, totals = fleet.run(200, {100: np.array([0.0, 3.0])})
    assert _opened(alerts) == {"fan-1"}
    assert totals.suppressed["muted_channel"] >= 1
    alerts, _ = fleet.run(200, {100: np.array([3.0, 0.0])})
    assert _opened(alerts) == {"pump-1", "fan-1"}


def test_a_rules_sensitivity_lowers_or_raises_the_bar_of_its_devices() -> None:
    fleet = Fleet([RuleConfig(devices="pump-*", sensitivity=0.3)])
    fleet.run(300)
    alerts, _ = fleet.run(200, {100: 0.8})  # below the method's bar on this signal
    assert _opened(alerts) == {"pump-1"}
    deaf = Fleet([RuleConfig(devices="pump-*", sensitivity=50.0)])
    deaf.run(300)
    alerts, totals = deaf.run(200, {100: 1.5})
    assert _opened(alerts) == {"fan-1"}
    assert totals.suppressed["feedback"] >= 1


def test_a_rule_may_judge_its_devices_by_other_parameters() -> None:
    fleet = Fleet([RuleConfig(devices="pump-*", thresholds=RuleThresholds(zscore=ZScoreConfig(z=3.0)))])
    assert len(fleet.pipeline.thresholds) == 2
    fleet.run(300)
    alerts, _ = fleet.run(200, {100: 0.8})  # z about 4.5: over 3, under 5
    assert _opened(alerts) == {"pump-1"}


def test_a_rule_may_judge_its_devices_by_another_method() -> None:
    fleet = Fleet([RuleConfig(devices="pump-*", thresholds=RuleThresholds(method="dynamic"))])
    assert [threshold.method for threshold in fleet.pipeline.thresholds] == ["zscore", "dynamic"]
    alerts, _ = fleet.run(700, {600: 8.0})
    methods = {alert.device_id: alert.method for alert in alerts if alert.event == "open"}
    assert methods == {"fan-1": "zscore", "pump-1": "dynamic"}


def test_maintenance_holds_even_where_the_bar_is_lowered() -> None:
    window = MaintenanceWindow(start="22:00", end="23:00", days=["tue"])
    fleet = Fleet([RuleConfig(devices="pump-*", sensitivity=0.3, maintenance=[window])])
    fleet.run(300)
    alerts, totals = fleet.run(200, {100: 0.8})  # flagged only under the lowered bar, inside the window
    assert _opened(alerts) == set()
    assert totals.suppressed["maintenance"] >= 1
