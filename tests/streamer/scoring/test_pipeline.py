from collections.abc import Sequence

import msgspec
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.alerts.episodes import alert_id
from streamer.codec import Alert, ReadingBatch
from streamer.config import Config, RangeNoveltyConfig, load_config
from streamer.scoring.pipeline import ScoringPipeline, rounds
from streamer.thresholds.zscore import tail_score

START_MS = 1_700_000_000_000
STEP_MS = 100


def config(*, warmup: int = 20, resolve_after: int = 5, max_devices: int = 1000, initial_devices: int = 4,
           channels: Sequence[str] = ("value",)) -> Config:
    base = load_config(None, environ={})
    replace = msgspec.structs.replace
    return replace(
        base,
        # Pipeline mechanics, with the simple deterministic forecaster.
        predictor=replace(base.predictor, kind="baseline"),
        readings=replace(base.readings, channels=list(channels)),
        # Young devices with one spike each: the record gate (tested in
        # tests/streamer/thresholds/test_record.py) would hold them back.
        thresholds=replace(base.thresholds, warmup=warmup,
                           record_gate=replace(base.thresholds.record_gate, enabled=False)),
        alerts=replace(base.alerts, resolve_after=resolve_after),
        buffers=replace(base.buffers, max_devices=max_devices, initial_devices=initial_devices),
    )


def batch(device_ids: Sequence[str], ts: Sequence[int], values: npt.ArrayLike,
          record_index: Sequence[int] | None = None) -> ReadingBatch:
    n = len(device_ids)
    return ReadingBatch(
        device_ids=list(device_ids),
        ts_ms=np.asarray(ts, dtype=np.int64),
        values=np.asarray(values, dtype=np.float64).reshape(n, -1),
        fetched_at=np.full(n, START_MS / 1000.0),
        record_index=np.asarray(range(n) if record_index is None else record_index, dtype=np.intp),
    )


def noisy(n: int, seed: int, level: float = 10.0, sigma: float = 0.1) -> npt.NDArray[np.float64]:
    return level + sigma * np.random.default_rng(seed).standard_normal(n)


def stable(alert: Alert) -> Alert:
    """The alert without its wall-clock fields."""
    return msgspec.structs.replace(alert, processing_ms=0.0, latency_ms=0.0)


# ---- rounds ---------------------------------------------------------------


def test_rounds_of_distinct_slots_is_one_round() -> None:
    assert [r.tolist() for r in rounds(np.array([3, 1, 2]))] == [[0, 1, 2]]
    assert rounds(np.array([], dtype=np.intp)) == []


def test_rounds_example() -> None:
    assert [r.tolist() for r in rounds(np.array([5, 7, 5, 5, 7]))] == [[0, 1], [2, 4], [3]]


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.integers(min_value=0, max_value=8), max_size=40))
def test_rounds_properties(raw: list[int]) -> None:
    slots = np.array(raw, dtype=np.intp)
    result = rounds(slots)
    rows = [row for r in result for row in r.tolist()]
    assert sorted(rows) == list(range(len(raw)))  # every row exactly once
    for round_rows in result:
        assert len(set(slots[round_rows].tolist())) == len(round_rows)  # distinct slots per round
    # round k holds the k-th occurrence of each slot, so per-slot order is kept
    occurrence: dict[int, int] = {}
    expected_round = []
    for slot in raw:
        expected_round.append(occurrence.get(slot, 0))
        occurrence[slot] = occurrence.get(slot, 0) + 1
    for k, round_rows in enumerate(result):
        assert all(expected_round[row] == k for row in round_rows.tolist())
    assert len(result) == (max(occurrence.values()) if raw else 0)


# ---- scoring --------------------------------------------------------------


def test_warmup_readings_are_counted_not_scored() -> None:
    pipeline = ScoringPipeline(config(warmup=5))
    for i in range(5):
        result = pipeline.score(batch(["d"], [START_MS + i], [1.0 + i]))
        assert (result.scored, result.warmup) == (0, 1)
        assert np.isnan(result.scores).all()
        assert result.alerts == []
    result = pipeline.score(batch(["d"], [START_MS + 5], [6.0]))
    assert (result.scored, result.warmup) == (1, 0)
    assert np.isfinite(result.scores).all()
    assert pipeline.registry.warming_up(5) == 0


def test_empty_batch() -> None:
    result = ScoringPipeline(config()).score(ReadingBatch.empty(1))
    assert (result.scored, result.warmup, result.rejections, result.alerts) == (0, 0, [], [])
    assert result.decided_at > 0


def test_duplicate_and_out_of_order_timestamps_are_rejected() -> None:
    pipeline = ScoringPipeline(config(warmup=0))
    pipeline.score(batch(["d"], [START_MS + 1000], [1.0]))
    result = pipeline.score(
        batch(["d", "d", "d", "e", "d"],
              [START_MS + 1000, START_MS + 500, START_MS + 2000, START_MS, START_MS + 2000],
              [1.0, 1.0, 1.0, 1.0, 1.0], record_index=[10, 11, 12, 13, 14])
    )
    assert sorted((r.record_index, r.reason) for r in result.rejections) == [
        (10, "duplicate_timestamp"), (11, "out_of_order"), (14, "duplicate_timestamp"),
    ]
    assert result.scored + result.warmup == 2
    assert result.event_ts_ms.tolist() == [START_MS + 2000, START_MS]
    assert np.isnan(result.scores[[0, 1, 4]]).all()
    slot = pipeline.registry.slot("d")
    assert slot is not None
    assert pipeline.registry.table["last_ts"][slot] == START_MS + 2000
    assert pipeline.registry.table["seen"][slot] == 2


def test_device_limit_rejects_new_devices() -> None:
    pipeline = ScoringPipeline(config(max_devices=2, initial_devices=2))
    result = pipeline.score(batch(["a", "b", "c", "a"], [START_MS, START_MS, START_MS, START_MS + 1],
                                  [1.0, 2.0, 3.0, 4.0], record_index=[4, 5, 6, 7]))
    assert [(r.record_index, r.reason) for r in result.rejections] == [(6, "device_limit")]
    assert result.scored + result.warmup == 3
    assert len(pipeline.registry) == 2
    assert pipeline.registry.slot("c") is None


def test_every_reading_is_accounted_for() -> None:
    pipeline = ScoringPipeline(config(warmup=3, max_devices=3, initial_devices=1))
    rng = np.random.default_rng(5)
    devices = ["a", "b", "c", "d"]
    for step in range(10):
        n = 12
        ids = [devices[i] for i in rng.integers(0, len(devices), n)]
        ts = START_MS + step * 1000 + rng.integers(-600, 600, n)  # some stale, some duplicate
        result = pipeline.score(batch(ids, ts.tolist(), rng.standard_normal(n)))
        assert result.scored + result.warmup + len(result.rejections) == n
        assert len(result.event_ts_ms) == result.scored + result.warmup
        assert len({r.record_index for r in result.rejections}) == len(result.rejections)


def feed_one_by_one(pipeline: ScoringPipeline, ids: Sequence[str], ts: Sequence[int],
                    values: npt.NDArray[np.float64]) -> list[tuple[int, list[Alert]]]:
    out = []
    for i in range(len(ids)):
        result = pipeline.score(batch([ids[i]], [ts[i]], values[i:i + 1]))
        out.append((result.scored, result.alerts))
    return out


def spike_series(n: int = 120, at: int = 80, seed: int = 1) -> npt.NDArray[np.float64]:
    values = noisy(n, seed)
    values[at] += 5.0  # 50 noise standard deviations
    return values


def test_spike_opens_exactly_one_alert_then_resolves() -> None:
    resolve_after = 5
    cfg = config(warmup=20, resolve_after=resolve_after)
    pipeline = ScoringPipeline(cfg)
    values = spike_series(at=80)
    ts = [START_MS + i * STEP_MS for i in range(len(values))]
    flagged: list[bool] = []
    events: list[tuple[int, Alert]] = []
    limit = tail_score(np.array([cfg.thresholds.zscore.z]))[0]
    for i, value in enumerate(values):
        result = pipeline.score(batch(["pump-1"], [ts[i]], [value]))
        flagged.append(bool(result.scores[0] >= limit))
        events.extend((i, alert) for alert in result.alerts)

    assert [(i, a.event) for i, a in events][:1] == [(80, "open")]
    assert [a.event for _, a in events] == ["open", "resolve"]
    (_, opened), (resolved_at, resolved) = events
    version = pipeline.predictor.version
    expected_id = alert_id("pump-1", ts[80], version)
    assert opened.alert_id == resolved.alert_id == expected_id
    assert opened.episode_start_ts == resolved.episode_start_ts == ts[80]
    assert opened.ts == ts[80] and resolved.ts == ts[resolved_at]
    assert opened.device_id == "pump-1" and opened.channel == "value"
    assert opened.model_version == version and opened.method == "zscore"
    assert opened.actual == values[80]
    assert abs(opened.residual - (opened.actual - opened.forecast)) < 1e-9
    assert opened.residual > 4.0
    assert 0.0 <= opened.score <= 1.0 and opened.score >= limit
    # resolved by the resolve_after-th consecutive calm reading, not earlier
    calm_run = 0
    for i in range(81, len(values)):
        calm_run = 0 if flagged[i] else calm_run + 1
        if calm_run == resolve_after:
            assert resolved_at == i
            break
    assert not any(flagged[:80])
    assert pipeline.episodes.open_count() == 0


def test_alert_id_uses_injected_predictor_version() -> None:
    class ZeroForecast:
        name = "zero"
        version = "zero-v1"

        def forecast(self, slots: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
            return np.zeros((len(slots), 1))

        def observe(self, slots: npt.NDArray[np.intp], values: npt.NDArray[np.float64]) -> None:
            return None

        def extra_rows(self) -> None:
            return None

        state_fields = ()

        def forget(self, slots: npt.NDArray[np.intp]) -> None:
            return None

        def rebuild(self, slots: npt.NDArray[np.intp], history: npt.NDArray[np.float64],
                    filled: npt.NDArray[np.int64], source: object = None) -> None:
            return None

    pipeline = ScoringPipeline(config(warmup=10), predictor=ZeroForecast())
    values = spike_series(n=60, at=40)
    alerts = [a for i, v in enumerate(values)
              for a in pipeline.score(batch(["x"], [START_MS + i], [v])).alerts]
    opens = [a for a in alerts if a.event == "open"]
    assert len(opens) == 1
    assert opens[0].alert_id == alert_id("x", START_MS + 40, "zero-v1")
    assert opens[0].model_version == "zero-v1"
    assert opens[0].forecast == 0.0


def test_burst_in_one_batch_equals_one_reading_per_batch() -> None:
    n = 100
    a_values = spike_series(n=n, at=60, seed=2)
    b_values = noisy(n, seed=3, level=-4.0, sigma=0.3)
    ids, ts, values = [], [], []
    for i in range(n):  # interleaved: a, b, a, b, ...
        ids += ["a", "b"]
        ts += [START_MS + i * STEP_MS, START_MS + i * STEP_MS + 7]
        values += [a_values[i], b_values[i]]
    all_values = np.array(values)

    one_by_one = ScoringPipeline(config(warmup=20, resolve_after=3))
    single = feed_one_by_one(one_by_one, ids, ts, all_values)
    burst = ScoringPipeline(config(warmup=20, resolve_after=3))
    result = burst.score(batch(ids, ts, all_values))

    single_alerts = [stable(a) for _, alerts in single for a in alerts]
    assert [a.event for a in single_alerts].count("open") >= 1  # the scenario does alert
    assert sorted(map(stable, result.alerts), key=lambda a: (a.ts, a.device_id, a.event)) == sorted(
        single_alerts, key=lambda a: (a.ts, a.device_id, a.event))
    assert result.scored == sum(scored for scored, _ in single)
    assert result.rejections == []
    for name in burst.registry.table.fields:
        np.testing.assert_array_equal(burst.registry.table[name][:2], one_by_one.registry.table[name][:2],
                                      err_msg=name)


def test_multi_channel_alert_names_the_channel() -> None:
    pipeline = ScoringPipeline(config(warmup=10, channels=("temp", "vibration")))
    temp = noisy(60, seed=4, level=20.0)
    vibration = noisy(60, seed=5, level=1.0, sigma=0.05)
    vibration[45] += 3.0
    alerts = [a for i in range(60)
              for a in pipeline.score(batch(["m"], [START_MS + i], [[temp[i], vibration[i]]])).alerts]
    opens = [a for a in alerts if a.event == "open"]
    assert len(opens) == 1
    assert opens[0].channel == "vibration"
    assert opens[0].actual == vibration[45]
    # The explanation names vibration first, with its own figures and the largest share.
    drivers = opens[0].drivers
    assert drivers[0].channel == "vibration" and drivers[0].score == opens[0].score
    assert (drivers[0].actual, drivers[0].forecast, drivers[0].residual) == (
        opens[0].actual, opens[0].forecast, opens[0].residual)
    assert drivers[0].share == max(d.share for d in drivers) > 0.5
    assert sum(d.share for d in drivers) == pytest.approx(1.0)


def test_alert_flagged_before_the_method_has_a_threshold_carries_null_and_decodes() -> None:
    # Range novelty can flag a reading while the dynamic threshold has not chosen
    # a threshold yet (NaN): the alert must say null, which JSON can carry and
    # subscribers can decode, instead of a NaN that breaks the schema.
    import json
    from pathlib import Path

    import jsonschema

    import streamer
    from streamer.codec import decode_alert, encode_alert

    base = config(warmup=5, resolve_after=5)
    replace = msgspec.structs.replace
    cfg = replace(base, thresholds=replace(base.thresholds, method="dynamic",
                                           range_novelty=RangeNoveltyConfig(margin=0.02, min_readings=10)))
    pipeline = ScoringPipeline(cfg)
    values = [*noisy(30, seed=3).tolist(), 50.0]
    alerts: list[Alert] = []
    for step, value in enumerate(values):
        alerts += pipeline.score(batch(["d"], [START_MS + step * STEP_MS], [value])).alerts
    opened = [alert for alert in alerts if alert.event == "open"]
    assert opened and opened[0].threshold is None
    schema = json.loads((Path(streamer.__file__).parent / "schemas" / "alert.schema.json").read_text())
    document = json.loads(encode_alert(opened[0]))
    jsonschema.validate(document, schema)
    assert document["threshold"] is None
    assert decode_alert(encode_alert(opened[0])) == opened[0]


def stuck_config(*, enabled: bool) -> Config:
    base = config(warmup=20, resolve_after=5, channels=("temp", "vibration"))
    replace = msgspec.structs.replace
    stuck = replace(base.thresholds.stuck, enabled=enabled, min_run=20, min_readings=50)
    return replace(base, thresholds=replace(base.thresholds, stuck=stuck))


def stuck_run(pipeline: ScoringPipeline) -> list[tuple[int, Alert]]:
    """Two noisy channels; vibration repeats one value for readings 150-249."""
    temp = noisy(300, seed=6, level=20.0)
    vibration = noisy(300, seed=7, level=1.0, sigma=0.05)
    vibration[150:250] = vibration[150]
    batches = (batch(["m"], [START_MS + i * STEP_MS], [[temp[i], vibration[i]]]) for i in range(300))
    return [(i, alert) for i, readings in enumerate(batches) for alert in pipeline.score(readings).alerts]


def test_a_stuck_channel_opens_one_episode_that_stays_open_while_it_is_stuck() -> None:
    events = stuck_run(ScoringPipeline(stuck_config(enabled=True)))
    opens = [(i, a) for i, a in events if a.event == "open"]
    assert [i for i, _ in opens if i < 250] == [170]  # the 21st identical reading, once
    opened = opens[0][1]
    assert opened.channel == "vibration" and opened.score == 1.0
    # The stuck channel, not the one the method scored highest, explains the alert.
    assert opened.drivers[0].channel == "vibration" and opened.drivers[0].score == 1.0
    assert opened.episode_start_ts == START_MS + 170 * STEP_MS
    resolves = [i for i, a in events if a.event == "resolve"]
    assert resolves and resolves[0] >= 250  # open for as long as the sensor is stuck


def test_without_the_stuck_detector_the_residual_misses_a_stuck_channel() -> None:
    events = stuck_run(ScoringPipeline(stuck_config(enabled=False)))
    assert not [i for i, a in events if a.event == "open" and i < 250]
