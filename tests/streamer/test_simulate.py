import itertools
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from streamer.simulate import DURATION, MAGNITUDE, Fleet, FleetSpec, read_truth, write_truth


def run(fleet: Fleet) -> npt.NDArray[np.float64]:
    return np.stack([fleet.values(step) for step in range(fleet.total_steps)])


def clean(fleet: Fleet, step: int) -> npt.NDArray[np.float64]:
    """The signal without noise or anomalies (the fleet's own formula)."""
    signal: npt.NDArray[np.float64] = fleet.level + fleet.amplitude * np.sin(
        2 * np.pi * step / fleet.period + fleet.phase)
    return signal


def test_same_seed_same_fleet() -> None:
    spec = FleetSpec(devices=6, seed=11, anomalies=8, quiet_readings=20)
    a, b = Fleet(spec, total_steps=300), Fleet(spec, total_steps=300)
    assert a.device_ids == b.device_ids
    assert a.truth(0, 100.0) == b.truth(0, 100.0)
    np.testing.assert_array_equal(run(a), run(b))
    c = Fleet(FleetSpec(devices=6, seed=12, anomalies=8, quiet_readings=20), total_steps=300)
    assert not np.array_equal(run(c)[:5], run(Fleet(spec, total_steps=300))[:5])


def test_values_shape_follows_devices_and_channels() -> None:
    fleet = Fleet(FleetSpec(devices=4, channels=("a", "b", "c"), anomalies=0), total_steps=10)
    assert fleet.values(0).shape == (4, 3)
    assert fleet.device_ids[0] == "dev-00000"
    assert fleet.schedule == []


def test_schedule_respects_quiet_readings_and_never_overlaps() -> None:
    spec = FleetSpec(devices=5, seed=3, anomalies=40, quiet_readings=50)
    fleet = Fleet(spec, total_steps=2000)
    assert len(fleet.schedule) > 5
    by_device: dict[int, list[tuple[int, int]]] = {}
    for item in fleet.schedule:
        assert item.start_step >= spec.quiet_readings
        lo, hi = DURATION[item.kind]
        assert lo <= item.steps <= hi
        mlo, mhi = MAGNITUDE[item.kind]
        assert mlo <= item.magnitude <= mhi
        by_device.setdefault(item.device, []).append((item.start_step, item.start_step + item.steps))
    for spans in by_device.values():
        spans.sort()
        for (_, end), (next_start, _) in itertools.pairwise(spans):
            assert next_start > end  # no two anomalies of one device overlap


def test_no_anomalies_when_run_is_too_short() -> None:
    assert Fleet(FleetSpec(anomalies=10, quiet_readings=80), total_steps=100).schedule == []


def test_spike_changes_exactly_one_reading_by_its_magnitude() -> None:
    spec = FleetSpec(devices=3, seed=5, anomalies=1, kinds=("spike",), quiet_readings=20)
    fleet = Fleet(spec, total_steps=200)
    (item,) = fleet.schedule
    assert item.kind == "spike" and item.steps == 1
    device = item.device
    noise = fleet.noise[device, 0]
    deviation = np.array([(fleet.values(s) - clean(fleet, s))[device, 0] for s in range(fleet.total_steps)])
    in_sigmas = np.abs(deviation) / noise
    others = np.delete(in_sigmas, item.start_step)
    assert others.max() < 5.0  # ordinary noise everywhere else
    expected = item.sign * item.magnitude * noise
    # the spike reading is off by magnitude * noise, plus ordinary noise
    assert abs(deviation[item.start_step] - expected) < 5.0 * noise
    assert in_sigmas[item.start_step] > 3.0


def test_truth_timestamps_follow_start_and_interval() -> None:
    spec = FleetSpec(devices=4, seed=9, anomalies=10, quiet_readings=30)
    fleet = Fleet(spec, total_steps=1500)
    start_ms, interval_ms = 1_700_000_000_000, 100.0
    truth = fleet.truth(start_ms, interval_ms)
    assert len(truth) == len(fleet.schedule)
    for item, scheduled in zip(truth, fleet.schedule, strict=True):
        assert item.device_id == fleet.device_ids[scheduled.device]
        assert item.kind == scheduled.kind
        assert item.start_ts == start_ms + scheduled.start_step * 100
        assert item.end_ts == item.start_ts + (scheduled.steps - 1) * 100
        assert item.start_ts >= start_ms + spec.quiet_readings * interval_ms
        assert item.magnitude == pytest.approx(scheduled.magnitude, abs=1e-3)


def test_truth_round_trips_through_a_file(tmp_path: Path) -> None:
    truth = Fleet(FleetSpec(devices=3, anomalies=5, quiet_readings=10), total_steps=500).truth(0, 50.0)
    path = tmp_path / "nested" / "truth.jsonl"
    write_truth(path, truth)
    assert read_truth(path) == truth


def test_drift_moves_a_share_of_devices_to_a_new_level_that_persists() -> None:
    base = FleetSpec(devices=10, seed=5, anomalies=0)
    drifted_spec = FleetSpec(devices=10, seed=5, anomalies=0, drift_at=100, drift_level=6.0, drift_share=0.3)
    plain, drifted = Fleet(base, total_steps=400), Fleet(drifted_spec, total_steps=400)
    assert drifted.drifted.sum() == 3
    before, after = run(plain), run(drifted)
    # The same seed draws the same noise: the drift is the only difference.
    np.testing.assert_array_equal(before[:100], after[:100])
    moved = drifted.drifted
    expected = 6.0 * drifted.noise[moved]
    for step in (100, 250, 399):  # the new level holds to the end of the run
        np.testing.assert_allclose(after[step][moved] - before[step][moved], expected)
        np.testing.assert_array_equal(after[step][~moved], before[step][~moved])


def test_drift_period_changes_the_season_of_drifted_devices_only() -> None:
    spec = FleetSpec(devices=6, seed=2, anomalies=0, drift_at=0, drift_level=0.0, drift_share=0.5,
                     drift_period=20.0)
    fleet = Fleet(spec, total_steps=10)
    plain = Fleet(FleetSpec(devices=6, seed=2, anomalies=0), total_steps=10)
    moved = fleet.drifted
    values, reference = fleet.values(7), plain.values(7)
    np.testing.assert_array_equal(values[~moved], reference[~moved])
    noise = reference - clean(plain, 7)
    expected = fleet.level + fleet.amplitude * np.sin(2 * np.pi * 7 / 20.0 + fleet.phase) + noise
    np.testing.assert_allclose(values[moved], expected[moved])


def test_anomalies_after_a_drift_are_relative_to_the_new_normal() -> None:
    spec = FleetSpec(devices=4, seed=9, anomalies=6, quiet_readings=200, kinds=("level_shift",),
                     drift_at=100, drift_level=10.0, drift_share=1.0)
    fleet = Fleet(spec, total_steps=600)
    values = run(fleet)
    item = fleet.schedule[0]
    d, middle = item.device, item.start_step + item.steps // 2
    new_normal = clean(fleet, middle)[d] + 10.0 * fleet.noise[d]
    shift = (values[middle, d] - new_normal) / fleet.noise[d]
    assert abs(abs(shift[0]) - item.magnitude) < 5.0  # the anomaly's size, around the drifted level


@pytest.mark.parametrize("field, value", [("drift_share", 1.5), ("drift_at", -1), ("drift_period", 0.0)])
def test_drift_settings_out_of_range_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        FleetSpec(**{field: value})  # type: ignore[arg-type]
