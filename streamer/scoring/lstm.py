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

from models.backends import BackendName, LSTMBackend, make_backend, row_records
from models.bundle import ModelBundle
from models.normalization import normalize, std_of, update_normalize
from streamer.scoring.predictor import Float64Array, IndexArray, Predictor, replay_history
from streamer.state.extra_rows import ExtraRows
from streamer.state.ring_buffer import RingBuffers
from streamer.state.slot_table import SlotTable

PredictorMode = Literal["window", "stateful"]
# States per device in stateful mode (the staggered pair).
STATES_PER_DEVICE = 2
# Columns of stateful_schedule().
RESTART_FIRST, RESTART_SECOND, USE_SECOND = 0, 1, 2


def stateful_schedule(window: int) -> npt.NDArray[np.bool_]:
    """What the staggered pair does at each reading, as a table looked up by :func:`schedule_key`.

    Row ``key`` says, for a device about to read a reading: restart the first
    state, restart the second, forecast from the second. The first state
    restarts every ``window`` readings from the first one; the second is held
    at zero state (restarted on every reading) until reading ``window / 2``,
    and from then on restarts ``window / 2`` readings after the first. The
    forecast comes from the state that will have read more.

    >>> table = stateful_schedule(4).astype(int)
    >>> table[:4].tolist()  # readings 0-3: the second starts at reading 2
    [[1, 1, 0], [0, 1, 0], [0, 1, 0], [0, 0, 0]]
    >>> table[4:].tolist()  # every later window, by reading count modulo 4
    [[1, 0, 1], [0, 0, 1], [0, 1, 0], [0, 0, 0]]
    """
    half = window // 2
    count = np.arange(2 * window)
    # Rows past the first window stand for every count with that phase.
    phase = count % window
    table = np.zeros((2 * window, 3), dtype=bool)
    table[:, RESTART_FIRST] = phase == 0
    table[:, RESTART_SECOND] = (phase == half) | (count < half)
    table[:, USE_SECOND] = (count >= window) & (phase < half)
    return table


def schedule_key(count: npt.NDArray[np.int64], window: int) -> npt.NDArray[np.int64]:
    """Row of :func:`stateful_schedule` for devices that have read ``count`` readings.

    >>> schedule_key(np.array([0, 3, 4, 5, 9]), 4).tolist()
    [0, 3, 4, 5, 5]
    """
    key: npt.NDArray[np.int64] = np.minimum(count, count % window + window)
    return key


def build_backend(bundle: ModelBundle, *, mode: PredictorMode, backend: BackendName, rows: int,
                  reserve: int) -> LSTMBackend:
    """The compute backend of a predictor whose table has ``rows`` rows (``reserve`` set aside).

    Setting a fleet's state table to zero takes long (over 100 ms for 100,000
    devices): a model swapped in while the daemon runs builds it off the scorer.
    """
    stateful = mode == "stateful"
    return make_backend(
        backend, bundle.weights, bundle.keras_model, window=bundle.metadata.window,
        # Backend row s holds slot s's states; window mode keeps none between readings.
        initial_rows=rows if stateful else 1,
        reserve_rows=reserve if stateful else None,
        states_per_row=STATES_PER_DEVICE if stateful else 1,
    )


class LSTMPredictor:
    """Batched forecasts from a trained LSTM bundle."""

    name = "lstm"

    def __init__(self, table: SlotTable, bundle: ModelBundle, *, mode: PredictorMode,
                 backend: BackendName, prepared: LSTMBackend | None = None) -> None:
        """``prepared``: the backend, built beforehand by :func:`build_backend` (off the scorer)."""
        metadata = bundle.metadata
        self.table = table
        self.bundle = bundle
        self.mode = mode
        self.window = metadata.window
        self.min_context = metadata.min_context
        self.spec = metadata.normalization
        channels = self.channels = metadata.architecture.channels
        # Running mean and variance side by side: one gather and one scatter per call.
        table.add_field("lstm_moments", (2, channels), np.float64, 0.0)
        table.add_field("lstm_count", (), np.int64, 0)
        table.add_field("lstm_next", (channels,), np.float64, np.nan)
        self.inputs = (RingBuffers(table, window=self.window, channels=channels, prefix="lstm_u")
                       if mode == "window" else None)
        self.backend: LSTMBackend = prepared or build_backend(bundle, mode=mode, backend=backend,
                                                              rows=table.capacity, reserve=table.reserve)
        self.name = f"lstm-{mode}-{self.backend.name}"
        self._schedule = stateful_schedule(self.window)
        self._records: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.void]]] = {}

    @property
    def version(self) -> str:
        """The bundle's content version."""
        return self.bundle.version

    def extra_rows(self) -> ExtraRows | None:
        """The stateful backend's state table (row = slot); window mode keeps none."""
        return self.backend if self.mode == "stateful" else None

    @property
    def state_fields(self) -> tuple[str, ...]:
        """Normalisation, reading count, next forecast, and (window mode) the normalised inputs."""
        prefix = self.table.prefix
        return tuple(prefix + name for name in self._own_fields())

    def _own_fields(self) -> list[str]:
        names = ["lstm_moments", "lstm_count", "lstm_next"]
        if self.inputs is not None:
            names += ["lstm_u", "lstm_u_head", "lstm_u_filled"]
        return names

    def forget(self, slots: IndexArray) -> None:
        """Back to no history: a zero reading count also restarts both backend states (stateful_schedule)."""
        self.table.reset_fields(slots, self._own_fields())

    def rebuild(self, slots: IndexArray, history: Float64Array, filled: npt.NDArray[np.int64],
                source: Predictor | None = None) -> None:
        """Rebuild ``slots`` from their last readings (right-aligned in ``history``, ``filled`` of them).

        With a ``source`` LSTM of the same normalisation (a model swapped in or
        shadowed beside the running one), its running mean and variance and
        reading count are carried over: they depend on the readings alone, and
        a ring buffer is too short to compute them again (the normalisation
        spans more readings). The readings are then normalised with them and
        stepped through this model at the reading counts they had, so its LSTM
        states and the schedule of their restarts are what they would be had it
        run all along, up to the drift of the mean and variance over the ring.
        Without one, or for a device whose whole history is in its ring, the
        readings are replayed as new (:func:`replay_history`).
        """
        if not (isinstance(source, LSTMPredictor) and source.spec == self.spec
                and source.channels == self.channels):
            replay_history(self, slots, history, filled)
            return
        counts = source.table["lstm_count"][slots]
        # A device whose whole history is in its ring is replayed as new: exactly as if it had run all along.
        whole = counts <= filled
        if whole.any():
            replay_history(self, slots[whole], history[whole], filled[whole])
            if whole.all():
                return
            slots, history, filled, counts = slots[~whole], history[~whole], filled[~whole], counts[~whole]
        self.forget(slots)
        table = self.table
        moments = source.table["lstm_moments"][slots]
        table["lstm_moments"][slots] = moments
        mean, std = moments[:, 0], std_of(self.spec, moments[:, 0], moments[:, 1])
        count = np.maximum(counts - filled, 0)
        predicted = np.zeros((len(slots), self.channels), np.float64)
        window = history.shape[1]
        if self.inputs is None:
            self.backend.ensure_rows(self.table.capacity)
        for step in range(window):
            present = np.flatnonzero(filled >= window - step)
            if not present.size:
                continue
            u = normalize(self.spec, history[present, step], mean[present], std[present]).astype(np.float32)
            if self.inputs is not None:
                self.inputs.append(slots[present], u)
            else:
                schedule = self._schedule.take(schedule_key(count[present], self.window), axis=0)
                outputs = self.backend.advance(slots[present], u, schedule[:, :USE_SECOND])
                predicted[present] = np.where(schedule[:, USE_SECOND, None], outputs[:, 1], outputs[:, 0])
            count[present] += 1
        if self.inputs is not None:
            ready = self.inputs.filled(slots) >= self.window
            if ready.any():
                predicted[ready] = self.backend.forecast_windows(self.inputs.windows(slots[ready]))
        else:
            ready = (filled > 0) & (count - 1 >= self.min_context - 1)
        forecast = predicted * std + mean
        forecast[~ready] = np.nan
        table["lstm_next"][slots] = forecast
        table["lstm_count"][slots] = np.where(filled > 0, counts, 0)

    def forecast(self, slots: IndexArray) -> Float64Array:
        """The forecast computed when each slot's last reading was observed."""
        result: Float64Array = self.table["lstm_next"][slots]
        return result

    def _field_records(self, name: str) -> npt.NDArray[np.void]:
        """The slot table field ``name`` as :func:`~models.backends.row_records` (cached until it grows)."""
        array = self.table[name]
        cached = self._records.get(name)
        if cached is None or cached[0] is not array:
            cached = (array, row_records(array))
            self._records[name] = cached
        return cached[1]

    def observe(self, slots: IndexArray, values: Float64Array) -> None:
        """Normalise, advance the model, and store each slot's next forecast."""
        table = self.table
        counts = table["lstm_count"]
        count = counts[slots]
        moment_records = self._field_records("lstm_moments")
        moments = moment_records.take(slots).view(np.float64).reshape(len(slots), 2, self.channels)
        std, u = update_normalize(self.spec, moments, count, values)
        if self.inputs is not None:
            predicted, ready = self._window_step(slots, u)
        else:
            predicted, ready = self._stateful_step(slots, u, count)
        predicted *= std
        predicted += moments[:, 0]
        if not ready.all():
            predicted[~ready] = np.nan
        self._field_records("lstm_next")[slots] = row_records(predicted)
        moment_records[slots] = row_records(moments)
        count += 1
        counts[slots] = count

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
        self.backend.ensure_rows(self.table.capacity)
        # Both states advance on every reading, in one call; see stateful_schedule().
        schedule = self._schedule.take(schedule_key(count, self.window), axis=0)
        outputs = self.backend.advance(slots, u, schedule[:, :USE_SECOND])
        predicted = np.where(schedule[:, USE_SECOND, None], outputs[:, 1], outputs[:, 0]).astype(np.float64)
        ready = count >= self.min_context - 1
        return predicted, ready
