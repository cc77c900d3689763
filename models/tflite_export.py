"""TensorFlow Lite export of the window-mode forecaster, and a runner for the result.

The graph is written from :class:`~models.weights.ForecasterWeights` as a
``tf.function`` unrolled over the fixed window, not converted from the Keras
model: Keras 3's LSTM is a ``while`` loop over a tensor list, which the
converter cannot lower with a dynamic batch and, with a fixed one, leaves as
``READ_VARIABLE``/``WHILE`` ops that neither run nor quantise. Unrolled, the
file holds builtin ops only (``FULLY_CONNECTED``, ``ADD``, ``MUL``,
``LOGISTIC``, ``TANH``, ``SPLIT``, ``UNPACK``), every one with an int8 kernel,
so full-integer quantisation works and any LiteRT runtime or delegate runs it.

Input ``window`` ``(batch, window, channels)`` float32, any batch; output
``forecast`` ``(batch, channels)`` float32, for every quantisation.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from models.weights import F32, ForecasterWeights

log = logging.getLogger(__name__)

# Windows per calibration batch of the int8 representative dataset.
CALIBRATION_BATCH = 64

# What ``int8`` produced, best first. Full integer: int8 weights and
# activations, float32 input/output with QUANTIZE/DEQUANTIZE at the edges.
# Fallback: integer kernels where the converter has them, float elsewhere.
FULL_INTEGER = "full_integer"
FLOAT_FALLBACK = "int8_with_float_fallback"


def tflite_bytes(weights: ForecasterWeights, window: int, quantization: str,
                 calibration: F32) -> tuple[bytes, str]:
    """Convert to a ``.tflite`` flatbuffer.

    Args:
        weights: The forecaster.
        window: Steps per input window.
        quantization: ``float32``, ``float16`` (weights stored as float16) or ``int8``.
        calibration: Normalised windows ``(n, window, channels)`` for the int8
            representative dataset (unused otherwise).

    Returns:
        ``(flatbuffer, kind)``: kind is the quantisation actually obtained.
    """
    from models.tf_runtime import load_tensorflow

    tf = load_tensorflow()
    function = _window_function(tf, weights, window)
    concrete = function.get_concrete_function()

    def converter() -> Any:
        return tf.lite.TFLiteConverter.from_concrete_functions([concrete], function)

    if quantization == "float32":
        return _convert(converter()), "float32"
    if quantization == "float16":
        conv = converter()
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
        return _convert(conv), "float16_weights"
    if quantization != "int8":
        raise ValueError(f"unknown quantization {quantization!r}")
    from tensorflow.lite.python.convert_phase import ConverterError

    conv = converter()
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _representative(calibration)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        return _convert(conv), FULL_INTEGER
    except ConverterError as exc:
        log.warning("no full-integer int8 conversion, keeping float kernels where int8 ones are missing: %s",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    conv = converter()
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = _representative(calibration)
    return _convert(conv), FLOAT_FALLBACK


def run_tflite(flatbuffer: bytes, windows: F32) -> F32:
    """Forecasts of a ``.tflite`` model for ``windows`` ``(batch, window, channels)``, one invoke."""
    interpreter = _interpreter(flatbuffer)
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], windows.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(windows, dtype=np.float32))
    interpreter.invoke()
    result: F32 = np.array(interpreter.get_tensor(out["index"]), dtype=np.float32)
    return result


def runtime_name() -> str:
    """The interpreter :func:`run_tflite` uses, with its version."""
    from importlib import metadata

    try:
        return f"ai-edge-litert {metadata.version('ai-edge-litert')}"
    except metadata.PackageNotFoundError:
        return f"tf.lite {metadata.version('tensorflow')}"


def _interpreter(flatbuffer: bytes) -> Any:
    try:
        # The LiteRT runtime is what edge nodes run, and the one TensorFlow
        # points to now that tf.lite.Interpreter is deprecated.
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from models.tf_runtime import load_tensorflow

        tf = load_tensorflow()

        with warnings.catch_warnings():
            # Without the export extra: TensorFlow's copy of the same runtime,
            # which warns on every construction that it is deprecated.
            warnings.filterwarnings("ignore", message=r"\s*Warning: tf\.lite\.Interpreter is deprecated",
                                    category=UserWarning)
            return tf.lite.Interpreter(model_content=flatbuffer)
    return Interpreter(model_content=flatbuffer)


def _convert(converter: Any) -> bytes:
    with warnings.catch_warnings():
        # Raised by the calibration pass of every post-training quantisation:
        # input statistics come from the representative dataset instead.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected",
                                category=UserWarning)
        flatbuffer: bytes = converter.convert()
    return flatbuffer


def _representative(calibration: F32) -> Callable[[], Iterator[list[F32]]]:
    def batches() -> Iterator[list[F32]]:
        for start in range(0, len(calibration), CALIBRATION_BATCH):
            yield [np.ascontiguousarray(calibration[start:start + CALIBRATION_BATCH], dtype=np.float32)]

    return batches


def _window_function(tf: Any, weights: ForecasterWeights, window: int) -> Any:
    """``windows -> {"forecast": ...}``: the LSTM step of :func:`models.weights.lstm_step`, unrolled."""
    channels = weights.channels

    def forecast(windows: Any) -> dict[str, Any]:
        sequence = windows
        hidden: Any = None
        for layer in weights.layers:
            units = layer.units
            kernel, recurrent = tf.constant(layer.kernel), tf.constant(layer.recurrent)
            # The input projection of every step at once: one FULLY_CONNECTED
            # per layer instead of one per step.
            flat = tf.reshape(sequence, [-1, layer.kernel.shape[0]])
            projected = tf.reshape(tf.matmul(flat, kernel) + tf.constant(layer.bias), [-1, window, 4 * units])
            hidden, cell = None, None
            outputs = []
            for z_input in tf.unstack(projected, axis=1):
                # Zero initial state: the first step has no recurrent product and no forget term.
                z = z_input if hidden is None else z_input + tf.matmul(hidden, recurrent)
                gate_i, gate_f, candidate, gate_o = tf.split(z, 4, axis=1)  # Keras order i, f, c, o
                update = tf.sigmoid(gate_i) * tf.tanh(candidate)
                cell = update if cell is None else tf.sigmoid(gate_f) * cell + update
                hidden = tf.sigmoid(gate_o) * tf.tanh(cell)
                outputs.append(hidden)
            sequence = tf.stack(outputs, axis=1)
        head = tf.matmul(hidden, tf.constant(weights.head_kernel)) + tf.constant(weights.head_bias)
        return {"forecast": head}

    signature = [tf.TensorSpec([None, window, channels], tf.float32, name="window")]
    return tf.function(forecast, input_signature=signature)
