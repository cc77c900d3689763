import pickle

import numpy as np

from streamer.config import BaselineConfig
from streamer.scoring.baseline import HoltPredictor
from streamer.state.slot_table import SlotTable


def make(alpha: float = 0.5, beta: float = 0.1, phi: float = 0.9, channels: int = 1,
         capacity: int = 4) -> HoltPredictor:
    return HoltPredictor(SlotTable(capacity), channels, BaselineConfig(alpha=alpha, beta=beta, phi=phi))


def run(predictor: HoltPredictor, series: np.ndarray, slot: int = 0) -> np.ndarray:
    """One-step-ahead forecasts of ``series`` for one slot."""
    slots = np.array([slot])
    forecasts = []
    for value in series:
        forecasts.append(predictor.forecast(slots)[0, 0])
        predictor.observe(slots, np.array([[value]]))
    return np.array(forecasts)


def test_first_forecast_is_nan_then_the_first_value() -> None:
    predictor = make()
    slots = np.array([0, 1])
    assert np.isnan(predictor.forecast(slots)).all()
    predictor.observe(np.array([0]), np.array([[4.0]]))
    forecast = predictor.forecast(slots)
    assert forecast[0, 0] == 4.0
    assert np.isnan(forecast[1, 0])


def test_constant_series_forecasts_the_constant() -> None:
    forecasts = run(make(), np.full(50, 7.25))
    assert np.isnan(forecasts[0])
    np.testing.assert_allclose(forecasts[1:], 7.25)


def test_level_shift_is_followed() -> None:
    series = np.concatenate([np.full(20, 1.0), np.full(60, 5.0)])
    forecasts = run(make(), series)
    assert abs(forecasts[-1] - 5.0) < 1e-3


def test_linear_ramp_error_goes_to_zero_with_trend() -> None:
    ramp = 3.0 + 0.5 * np.arange(400)
    with_trend = run(make(alpha=0.5, beta=0.3, phi=1.0), ramp)
    errors = np.abs(ramp - with_trend)
    assert errors[-1] < 1e-3
    assert errors[-1] < errors[5]
    # without a trend term the forecast lags a ramp by a constant amount
    no_trend = run(make(alpha=0.5, beta=0.0, phi=1.0), ramp)
    assert abs(ramp[-1] - no_trend[-1]) > 0.4


def test_forecast_does_not_change_state() -> None:
    predictor = make(channels=2)
    slots = np.array([0, 2])
    predictor.observe(slots, np.array([[1.0, 2.0], [3.0, 4.0]]))
    predictor.observe(slots, np.array([[2.0, 2.5], [3.5, 3.0]]))
    before = predictor.table["holt_level"].copy(), predictor.table["holt_trend"].copy()
    first = predictor.forecast(slots)
    second = predictor.forecast(slots)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(predictor.table["holt_level"], before[0])
    np.testing.assert_array_equal(predictor.table["holt_trend"], before[1])


def test_observe_does_not_mutate_inputs_and_is_deterministic() -> None:
    values = np.array([[1.0], [2.0]])
    slots = np.array([0, 1])
    kept_values, kept_slots = values.copy(), slots.copy()
    a, b = make(), make()
    for predictor in (a, b):
        predictor.observe(slots, values)
        predictor.observe(slots, values * 2)
    np.testing.assert_array_equal(values, kept_values)
    np.testing.assert_array_equal(slots, kept_slots)
    np.testing.assert_array_equal(a.forecast(slots), b.forecast(slots))


def test_state_is_picklable() -> None:
    predictor = make()
    predictor.observe(np.array([0]), np.array([[3.0]]))
    clone = pickle.loads(pickle.dumps(predictor))  # noqa: S301  # our own object
    np.testing.assert_array_equal(clone.forecast(np.array([0])), predictor.forecast(np.array([0])))


def test_version_depends_on_parameters() -> None:
    assert make().version == make().version
    assert make().version != make(alpha=0.4).version
    assert make().version.startswith("baseline-")
    assert make().name == "baseline-holt"
