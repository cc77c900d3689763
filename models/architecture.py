"""The Keras 3 forecaster: stacked LSTMs, one-step-ahead output at every step.

The network reads normalised inputs ``(batch, time, channels)`` of any length
and returns a one-step-ahead forecast at every step ``(batch, time,
channels)``. Training puts the loss on every step past a minimum context, so
the same weights forecast from any history length: window mode reads the
last step of a window, stateful mode advances one step at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ArchitectureSpec:
    """Shape of the network (stored in the model bundle)."""

    channels: int = 1
    units: int = 32
    layers: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.channels < 1 or self.units < 1 or self.layers < 1:
            raise ValueError("channels, units and layers must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")


def build_forecaster(spec: ArchitectureSpec, *, seed: int = 0) -> Any:
    """A fresh, untrained ``keras.Model``.

    Layer names are fixed (``lstm_0`` … and ``head``) so exported weights can
    be matched to layers by name.
    """
    # Imported here: loading a bundle for the numpy backend must not import
    # Keras (and with it TensorFlow, half a gigabyte on an edge node).
    from models.tf_runtime import load_keras

    keras = load_keras()

    initializer_seed = seed
    inputs = keras.Input(shape=(None, spec.channels), name="normalized")
    x = inputs
    for layer in range(spec.layers):
        x = keras.layers.LSTM(
            spec.units,
            return_sequences=True,
            dropout=spec.dropout,
            kernel_initializer=keras.initializers.GlorotUniform(seed=initializer_seed + 2 * layer),
            recurrent_initializer=keras.initializers.Orthogonal(seed=initializer_seed + 2 * layer + 1),
            name=f"lstm_{layer}",
        )(x)
    outputs = keras.layers.Dense(
        spec.channels,
        kernel_initializer=keras.initializers.GlorotUniform(seed=initializer_seed + 1000),
        name="head",
    )(x)
    return keras.Model(inputs, outputs, name="streamer_forecaster")
