"""The LSTM predictor: a trained bundle behind the Predictor seam.

Per device the slot table keeps the running normalisation statistics and the
forecast of the next reading (computed when the current one is observed, so
``forecast`` is a lookup).

Two modes, both one backend call per round:

- ``window``: the model's forecast from the device's last ``window``
  normalised inputs (a ring buffer), from zero state, exactly as Keras
  computes it. A device is forecast once its window is full.
- ``stateful``: each device owns two LSTM states in the backend's state
  table and every reading advances both by one step: O(1) per reading
  instead of O(window). The model was trained on histories of at most
  ``window`` readings from zero state, so an unbounded state would drift out
  of the distribution it learned. Each state is therefore restarted from
  zero every ``window`` readings, the two staggered by ``window / 2``, and
  the forecast comes from the state that has read more: always between
  ``window / 2 + 1`` and ``window`` readings, inside what training covered.
  A new device starts at zero state; its first forecasts come after
  ``min_context`` readings, as in training.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from models.backends import BackendName, LSTMBackend, make_backend
from models.bundle import ModelBundle
from models.normalization import normalize, std_of, update_stats
from streamer.scoring.predictor import Float64Array, IndexArray
from streamer.state.ring_buffer import RingBuffers
from streamer.state.slot_table import SlotTable

PredictorMode = Literal["window", "stateful"]
# States per device in stateful mode (the staggered pair).
STATES_PER_DEVICE = 2


class LSTMPredictor:
    """Batched forecasts from a trained LSTM bundle."""

    name = "lstm"

    def __init__(self, table: SlotTable, bundle: ModelBundle, *, mode: PredictorMode,
                 backend: BackendName) -> None:
        metadata = bundle.metadata
        self.table = table
        self.bundle = bundle
        self.mode = mode
        self.window = metadata.window
        self.min_context = metadata.min_context
        self.spec = metadata.normalization
        channels = metadata.architecture.channels
        table.add_field("lstm_mean", (channels,), np.float64, 0.0)
        table.add_field("lstm_var", (channels,), np.float64, 0.0)
        table.add_field("lstm_count", (), np.int64, 0)
        table.add_field("lstm_next", (channels,), np.float64, np.nan)
        self.inputs = (RingBuffers(table, window=self.window, channels=channels, prefix="lstm_u")
                       if mode == "window" else None)
        self.backend: LSTMBackend = make_backend(
            backend, bundle.weights, bundle.keras_model, window=self.window,
            # Window mode keeps no LSTM state between readings.
            initial_rows=STATES_PER_DEVICE * table.capacity if mode == "stateful" else 1,
        )
        self.name = f"lstm-{mode}-{self.backend.name}"

    @property
    def version(self) -> str:
        """The bundle's content version."""
        return self.bundle.version

    def forecast(self, slots: IndexArray) -> Float64Array:
        """The forecast computed when each slot's last reading was observed."""
        result: Float64Array = self.table["lstm_next"][slots]
        return result

    def observe(self, slots: IndexArray, values: Float64Array) -> None:
        """Normalise, advance the model, and store each slot's next forecast."""
        table = self.table
        count = table["lstm_count"][slots]
        mean, var = update_stats(self.spec, table["lstm_mean"][slots], table["lstm_var"][slots],
                                 count, values)
        std = std_of(self.spec, mean, var)
        u = normalize(self.spec, values, mean, std).astype(np.float32)
        if self.inputs is not None:
            predicted, ready = self._window_step(slots, u)
        else:
            predicted, ready = self._stateful_step(slots, u, count)
        table["lstm_next"][slots] = np.where(ready[:, None], mean + std * predicted, np.nan)
        table["lstm_mean"][slots] = mean
        table["lstm_var"][slots] = var
        table["lstm_count"][slots] = count + 1

    def _window_step(
        self, slots: IndexArray, u: npt.NDArray[np.float32]
    ) -> tuple[Float64Array, npt.NDArray[np.bool_]]:
        assert self.inputs is not None  # noqa: S101  # window mode only
        self.inputs.append(slots, u)
        ready = self.inputs.filled(slots) >= self.window
        predicted = np.zeros(u.shape, np.float64)
        if ready.any():
            predicted[ready] = self.backend.forecast_windows(self.inputs.windows(slots[ready]))
        return predicted, ready

    def _stateful_step(self, slots: IndexArray, u: npt.NDArray[np.float32],
                       count: npt.NDArray[np.int64]) -> tuple[Float64Array, npt.NDArray[np.bool_]]:
        window = self.window
        half = window // 2
        self.backend.ensure_rows(STATES_PER_DEVICE * self.table.capacity)
        first = STATES_PER_DEVICE * slots
        second = first + 1
        age_first = count % window
        second_started = count >= half
        age_second = (count - half) % window
        restart = np.concatenate([first[age_first == 0], second[second_started & (age_second == 0)]])
        self.backend.reset(restart)
        rows = np.concatenate([first, second[second_started]])
        inputs = np.concatenate([u, u[second_started]])
        outputs = self.backend.advance(rows, inputs)
        predicted = outputs[: len(slots)].astype(np.float64)
        # Use the state that has read more readings (always in [half + 1, window]).
        use_second = np.zeros(len(slots), dtype=bool)
        use_second[second_started] = age_second[second_started] > age_first[second_started]
        if use_second.any():
            second_outputs = np.zeros_like(predicted)
            second_outputs[second_started] = outputs[len(slots):]
            predicted[use_second] = second_outputs[use_second]
        ready = count + 1 >= self.min_context
        return predicted, ready
