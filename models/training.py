"""Train the forecaster on per-device series and describe it for the bundle.

The loss is the squared error of the one-step-ahead forecast in each
device's normalised units, over every step with at least ``min_context``
readings of history (temporal sample weights). Training stops when the
held-out loss stops improving and keeps the best epoch's weights.

The bundle's validation metrics compare the model with the naive "next
reading equals the last one" forecast on the same held-out steps; in
normalised units that forecast is simply the last input ``u_t``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from models.architecture import ArchitectureSpec, build_forecaster
from models.bundle import BundleMetadata
from models.data import fingerprint as data_fingerprint
from models.evaluation import ForecastErrors, forecast_errors
from models.normalization import NormalizationSpec
from models.tf_runtime import load_keras
from models.windows import make_sequences

# Through tf_runtime: TensorFlow's start-up lines are filtered, its errors kept.
keras = load_keras()

log = logging.getLogger(__name__)

# Defined beside the held-out comparison of retraining (models.evaluation), which
# uses the same metric; importable from here as before.
__all__ = ["ForecastErrors", "forecast_errors", "train"]

FloatArray = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

# Suggested threshold parameters stored in the bundle: a z-score of 5 on a
# lightly smoothed error, against statistics over the last 200 errors.
SUGGESTED_THRESHOLD: dict[str, float] = {"z": 5.0, "smoothing_span": 2.0, "window": 200}
# Epochs without a better held-out loss before training stops / the rate halves.
EARLY_STOP_PATIENCE = 4
REDUCE_LR_PATIENCE = 2
REDUCE_LR_FACTOR = 0.5
MIN_LEARNING_RATE = 1e-5
# Batch size of the validation forward pass (memory only; results do not depend on it).
_PREDICT_BATCH = 1024


def train(
    series: Mapping[str, FloatArray],
    *,
    window: int = 32,
    min_context: int = 8,
    architecture: ArchitectureSpec | None = None,
    normalization: NormalizationSpec | None = None,
    epochs: int = 20,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    val_fraction: float = 0.1,
    seed: int = 7,
    max_sequences: int | None = None,
    stride: int | None = None,
    channels: Sequence[str] | None = None,
    command: str | None = None,
    verbose: int = 1,
) -> tuple[Any, BundleMetadata]:
    """Train a forecaster on per-device series.

    Args:
        series: Per-device readings ``(time, channels)`` in time order.
        window: Steps per training sequence; also the bundle's window.
        min_context: Readings of history before a step counts in the loss.
        architecture: Network shape (default: 32 units, one layer, the
            series' channel count).
        normalization: Input normalisation (default :class:`NormalizationSpec`).
        epochs: Most passes over the training sequences.
        batch_size: Sequences per gradient step.
        learning_rate: Initial Adam learning rate.
        val_fraction: Share of each device's readings, at its end, held out.
        seed: Seeds weights, sampling and shuffling.
        max_sequences: Most training sequences (a seeded random subset);
            validation is capped in proportion.
        stride: Steps between sequence starts (default ``window // 4``).
        channels: Channel names (default ``value`` or ``value_0``, ...).
        command: The command line that ran training, for the bundle.
        verbose: Keras progress output (0 silent, 1 progress bars, 2 a line per epoch).

    Returns:
        The trained Keras model (best held-out epoch) and the bundle metadata.
    """
    if not series:
        raise ValueError("no training series")
    n_channels = next(iter(series.values())).shape[1]
    names = tuple(channels) if channels is not None else (
        ("value",) if n_channels == 1 else tuple(f"value_{i}" for i in range(n_channels)))
    architecture = architecture or ArchitectureSpec(channels=n_channels)
    normalization = normalization or NormalizationSpec()
    if architecture.channels != n_channels or len(names) != n_channels:
        raise ValueError(f"series have {n_channels} channel(s); architecture has {architecture.channels}, "
                         f"names {len(names)}")

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    split = make_sequences(series, normalization, window=window, min_context=min_context, stride=stride,
                           val_fraction=val_fraction)
    # Validation is capped in proportion to the training cap.
    val_limit = (None if max_sequences is None
                 else max(1, round(max_sequences * val_fraction / (1 - val_fraction))))
    train_set = split.train.sample(max_sequences, rng)
    val_set = split.validation.sample(val_limit, rng)
    has_validation = len(val_set) > 0
    if not has_validation:
        log.warning("no device has %d readings after its split: no validation metrics, and early "
                    "stopping watches the training loss",
                    window + 1)

    model = build_forecaster(architecture, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="mse")
    monitor = "val_loss" if has_validation else "loss"
    stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=EARLY_STOP_PATIENCE,
                                            restore_best_weights=True)
    callbacks = [
        stopper,
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=REDUCE_LR_FACTOR,
                                          patience=REDUCE_LR_PATIENCE, min_lr=MIN_LEARNING_RATE),
    ]
    history = model.fit(
        train_set.inputs, train_set.targets, sample_weight=train_set.weights,
        validation_data=(val_set.inputs, val_set.targets, val_set.weights) if has_validation else None,
        epochs=epochs, batch_size=batch_size, shuffle=True, callbacks=callbacks, verbose=verbose,
    )
    losses = [float(x) for x in history.history[monitor]]

    validation: dict[str, float] = {}
    if has_validation:
        forecast = np.asarray(model.predict(val_set.inputs, batch_size=_PREDICT_BATCH, verbose=0), np.float32)
        model_errors = forecast_errors(forecast, val_set)
        naive_errors = forecast_errors(val_set.inputs, val_set)
        validation = {
            "mse": model_errors.mse,
            "mae": model_errors.mae,
            "naive_mse": naive_errors.mse,
            "naive_mae": naive_errors.mae,
            # Below 1: the model beats "next = last".
            "mse_ratio_to_naive": model_errors.mse / naive_errors.mse if naive_errors.mse else float("nan"),
        }

    training: dict[str, Any] = {
        "data_fingerprint": data_fingerprint(series, names),
        "devices": len(series),
        "steps": int(sum(len(values) for values in series.values())),
        "sequences": len(train_set),
        "validation_sequences": len(val_set),
        "stride": stride or max(1, window // 4),
        "val_fraction": val_fraction,
        "max_sequences": max_sequences,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
        "epochs": epochs,
        "epochs_run": len(losses),
        "best_epoch": int(np.argmin(losses)) + 1,
        "keras": keras.__version__,
    }
    if command is not None:
        training["command"] = command
    metadata = BundleMetadata(
        architecture=architecture,
        normalization=normalization,
        window=window,
        min_context=min_context,
        channels=names,
        threshold=dict(SUGGESTED_THRESHOLD),
        training=training,
        validation=validation,
    )
    return model, metadata
