"""ONNX export of the window-mode forecaster, built from the weights with ``onnx.helper``.

tf2onnx does not support TensorFlow 2.21 with numpy 2, and the graph is
small, so it is written directly: per layer the standard ONNX ``LSTM``
operator, then ``MatMul`` + ``Add`` for the head on the last layer's final
hidden state ``Y_h``::

    window (batch, window, channels)
      -> Transpose (window, batch, channels)       ONNX LSTM reads layout 0
      -> LSTM lstm_0 -> Y (window, 1, batch, U) -> Squeeze -> ... -> LSTM lstm_{n-1}
      -> Y_h (1, batch, U) -> Squeeze -> MatMul head_kernel -> Add head_bias
      -> forecast (batch, channels)

ONNX orders the gates ``i, o, f, c`` (Keras: ``i, f, c, o``), stores ``W``
as ``(1, 4U, inputs)`` and ``R`` as ``(1, 4U, U)`` (transposed Keras
kernels), and adds two biases ``B = [Wb, Rb]``: the Keras bias goes in
``Wb``, zeros in ``Rb``.

Quantisations: ``float32``; ``float16`` stores the weights as float16 and
casts them to float32 in the graph (onnxruntime's CPU LSTM computes in
float32); ``int8`` is onnxruntime's dynamic quantisation: int8 weights,
activations quantised at run time, with the ``com.microsoft``
``DynamicQuantizeLSTM`` operator, so that file runs on onnxruntime only.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from models.weights import F32, ForecasterWeights

# Opset 17 / IR 8: the newest pair every maintained onnxruntime release
# (1.14 onward) and most edge runtimes load; nothing newer is needed.
OPSET = 17
IR_VERSION = 8

INPUT_NAME = "window"
OUTPUT_NAME = "forecast"


def keras_to_onnx_gates(array: F32) -> F32:
    """Reorder the gate blocks on the last axis from Keras ``i, f, c, o`` to ONNX ``i, o, f, c``.

    >>> keras_to_onnx_gates(np.array([1.0, 2.0, 3.0, 4.0], np.float32)).tolist()
    [1.0, 4.0, 2.0, 3.0]
    """
    gate_i, gate_f, candidate, gate_o = np.split(array, 4, axis=-1)
    reordered: F32 = np.concatenate([gate_i, gate_o, gate_f, candidate], axis=-1)
    return reordered


def onnx_model(weights: ForecasterWeights, window: int, *, float16: bool = False) -> Any:
    """The forecaster as an ``onnx.ModelProto`` (checked with ``onnx.checker``).

    Args:
        weights: The forecaster.
        window: Steps per input window (the batch dimension stays symbolic).
        float16: Store the weights as float16, cast to float32 in the graph.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []

    def weight(name: str, array: F32) -> str:
        if not float16:
            initializers.append(numpy_helper.from_array(array.astype(np.float32), name))
            return name
        initializers.append(numpy_helper.from_array(array.astype(np.float16), f"{name}_float16"))
        nodes.append(helper.make_node("Cast", [f"{name}_float16"], [name], to=TensorProto.FLOAT))
        return name

    def axes(name: str, axis: int) -> str:
        initializers.append(numpy_helper.from_array(np.array([axis], np.int64), name))
        return name

    nodes.append(helper.make_node("Transpose", [INPUT_NAME], ["time_major"], perm=[1, 0, 2]))
    sequence = "time_major"
    last_hidden = ""
    for index, layer in enumerate(weights.layers):
        name = f"lstm_{index}"
        units = layer.units
        w = keras_to_onnx_gates(layer.kernel).T[np.newaxis]
        r = keras_to_onnx_gates(layer.recurrent).T[np.newaxis]
        b = np.concatenate([keras_to_onnx_gates(layer.bias), np.zeros(4 * units, np.float32)])[np.newaxis]
        inputs = [sequence, weight(f"{name}_W", w), weight(f"{name}_R", r), weight(f"{name}_B", b)]
        nodes.append(helper.make_node("LSTM", inputs, [f"{name}_Y", f"{name}_Y_h"], name=name,
                                      hidden_size=units))
        # Y is (time, directions=1, batch, U); the next layer reads (time, batch, U).
        nodes.append(helper.make_node("Squeeze", [f"{name}_Y", axes(f"{name}_directions", 1)],
                                      [f"{name}_sequence"]))
        sequence, last_hidden = f"{name}_sequence", f"{name}_Y_h"
    nodes.append(helper.make_node("Squeeze", [last_hidden, axes("hidden_directions", 0)], ["hidden"]))
    nodes.append(helper.make_node("MatMul", ["hidden", weight("head_kernel", weights.head_kernel)],
                                  ["head_product"]))
    nodes.append(helper.make_node("Add", ["head_product", weight("head_bias", weights.head_bias)],
                                  [OUTPUT_NAME], name="head"))
    graph = helper.make_graph(
        nodes, "streamer_forecaster",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", window, weights.channels])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", weights.channels])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="streamer")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def onnx_bytes(weights: ForecasterWeights, window: int, quantization: str) -> tuple[bytes, str]:
    """Serialise to ``.onnx`` bytes.

    Returns:
        ``(bytes, kind)``: kind is the quantisation actually obtained.
    """
    if quantization == "float32":
        return onnx_model(weights, window).SerializeToString(), "float32"
    if quantization == "float16":
        return onnx_model(weights, window, float16=True).SerializeToString(), "float16_weights"
    if quantization != "int8":
        raise ValueError(f"unknown quantization {quantization!r}")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as scratch:
        source, target = Path(scratch) / "float32.onnx", Path(scratch) / "int8.onnx"
        onnx.save(onnx_model(weights, window), source)
        with _without_root_warnings():
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        return target.read_bytes(), "dynamic_range"


def run_onnx(model: bytes, windows: F32) -> F32:
    """Forecasts of an ``.onnx`` model for ``windows`` ``(batch, window, channels)``, on onnxruntime's CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    (result,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(windows, dtype=np.float32)})
    forecast: F32 = np.asarray(result, dtype=np.float32)
    return forecast


def runtime_name() -> str:
    """The runtime :func:`run_onnx` uses, with its version."""
    from importlib import metadata

    return f"onnxruntime {metadata.version('onnxruntime')}"


@contextlib.contextmanager
def _without_root_warnings() -> Iterator[None]:
    # quantize_dynamic advises "pre-processing" (shape inference, for large
    # models) on the root logger at every call; it changes nothing here. A
    # logger's filter sees only records logged on it, so other loggers still pass.
    root = logging.getLogger()

    def drop(record: logging.LogRecord) -> bool:
        return False

    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
