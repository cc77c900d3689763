"""Train a forecaster variant on MSL train parts with the product's recipe.

Recipe as streamer/lab/evaluation/command.py TrainingOptions + models/training.py:
window 32, stride 2, min_context 8, 90/10 time split per channel, at most
60000 training sequences (seeded subset; validation capped in proportion),
1 LSTM layer of 32 units, Adam lr 0.003, batch 256, up to 20 epochs, early
stopping (patience 4, best weights) and LR halving (patience 2).

Variants:
- exog=False, k=1: the product's model (value-only, next value).
- exog=True: inputs are the normalised value plus the 54 raw command columns
  at the same step (a forecast of x_{t+1} reads commands up to t).
- k>1: the head outputs (x_{t+j} - mean_t) / std_t for j = 1..k (all in the loss).
"""

from __future__ import annotations

import time

import numpy as np

from models.normalization import normalize
from models.tf_runtime import load_keras
from models.training import EARLY_STOP_PATIENCE, MIN_LEARNING_RATE, REDUCE_LR_FACTOR, REDUCE_LR_PATIENCE
from models.windows import normalize_many, split_point, step_weights, window_starts

from harness import MIN_CONTEXT, SPEC, WINDOW

keras = load_keras()

STRIDE = 2
MAX_SEQ = 60_000
VAL_FRACTION = 0.1
LR = 0.003
EPOCHS = 20
BATCH = 256


def features(series: np.ndarray, u: np.ndarray, exog: bool) -> np.ndarray:
    """Model inputs per step: u_t [+ command columns at t]."""
    return np.concatenate([u, series[:, 1:]], axis=1) if exog else u


def targets(values: np.ndarray, mean: np.ndarray, std: np.ndarray, k: int) -> np.ndarray:
    """(T - k, k): (x_{t+j} - mean_t)/std_t, clipped like the product's targets."""
    steps = len(values)
    cols = [normalize(SPEC, values[j:steps - k + j], mean[:steps - k], std[:steps - k]) for j in range(1, k + 1)]
    return np.stack(cols, axis=1)


def cut(array: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return array[starts[:, None] + np.arange(WINDOW)[None, :]].astype(np.float32)


def sequences(train_parts: list[np.ndarray], exog: bool, k: int):
    parts = {"train": ([], []), "validation": ([], [])}
    stats = normalize_many(SPEC, [part[:, :1] for part in train_parts])
    for series, (u, mean, std) in zip(train_parts, stats, strict=True):
        x = features(series, u, exog)
        y = targets(series[:, 0], mean[:, 0], std[:, 0], k)  # row t: pair read at t
        steps = len(series)
        split = split_point(steps, VAL_FRACTION)
        # Training pairs' last target x_{t+k} <= split - 1; validation inputs from split.
        spans = {"train": (0, split - k), "validation": (split, steps - k)}
        for name, (start, stop) in spans.items():
            starts = window_starts(start, stop, WINDOW, STRIDE)
            if len(starts):
                parts[name][0].append(cut(x, starts))
                parts[name][1].append(cut(y, starts))
    weights = step_weights(WINDOW, MIN_CONTEXT)
    out = {}
    for name, (xs, ys) in parts.items():
        xi, yi = np.concatenate(xs), np.concatenate(ys)
        out[name] = (xi, yi, np.broadcast_to(weights, xi.shape[:2]).copy())
    return out


def sample(data, limit, rng):
    n = len(data[0])
    if n <= limit:
        return data
    idx = np.sort(rng.choice(n, size=limit, replace=False))
    return tuple(a[idx] for a in data)


def build(n_inputs: int, k: int, seed: int):
    inputs = keras.Input(shape=(None, n_inputs), name="normalized")
    x = keras.layers.LSTM(32, return_sequences=True,
                          kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
                          recurrent_initializer=keras.initializers.Orthogonal(seed=seed + 1), name="lstm_0")(inputs)
    outputs = keras.layers.Dense(k, kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1000),
                                 name="head")(x)
    return keras.Model(inputs, outputs)


def train(train_parts: list[np.ndarray], *, exog: bool, k: int, seed: int):
    """(model, info) trained on the channels' train parts."""
    started = time.monotonic()
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    data = sequences(train_parts, exog, k)
    val_limit = max(1, round(MAX_SEQ * VAL_FRACTION / (1 - VAL_FRACTION)))
    tr = sample(data["train"], MAX_SEQ, rng)
    va = sample(data["validation"], val_limit, rng)
    model = build(tr[0].shape[2], k, seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=LR), loss="mse")
    history = model.fit(tr[0], tr[1], sample_weight=tr[2], validation_data=va, epochs=EPOCHS, batch_size=BATCH,
                        shuffle=True, verbose=0, callbacks=[
                            keras.callbacks.EarlyStopping(monitor="val_loss", patience=EARLY_STOP_PATIENCE,
                                                          restore_best_weights=True),
                            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=REDUCE_LR_FACTOR,
                                                              patience=REDUCE_LR_PATIENCE,
                                                              min_lr=MIN_LEARNING_RATE)])
    losses = history.history["val_loss"]
    # Held-out MSE of the 1-step (and k-step) output against persistence (forecast = last input u_t).
    pred = np.asarray(model.predict(va[0], batch_size=1024, verbose=0), np.float64)
    w = va[2][..., None].astype(np.float64)
    naive = va[0][..., :1].astype(np.float64)
    ratios = [float((w[..., 0] * (pred[..., j] - va[1][..., j]) ** 2).sum()
                    / (w[..., 0] * (naive[..., 0] - va[1][..., j]) ** 2).sum()) for j in (0, k - 1)]
    info = {"seconds": round(time.monotonic() - started, 1), "epochs_run": len(losses),
            "best_epoch": int(np.argmin(losses)) + 1, "sequences": len(tr[0]),
            "val_mse_ratio_h1": round(ratios[0], 3), "val_mse_ratio_hk": round(ratios[1], 3)}
    return model, info
