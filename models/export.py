"""Export a bundle's forecaster for the edge (TFLite or ONNX), checked against the Keras model.

Window mode: the exported model maps a window of normalised inputs
``window (batch, window, channels)`` to the forecast after its last step,
``forecast (batch, channels)``: exactly the Keras model's ``output[:, -1]``.
Normalisation stays with the caller, as in the daemon (its parameters are in
``bundle.json``). Both formats take any batch size.

Every export is run once in its runtime (LiteRT, onnxruntime) on sample
windows and compared with the Keras model of the same bundle; the result is
written next to the file as ``<file>.json`` (see :class:`ExportReport`).
The graphs are written from the bundle's ``weights.npz``, so the comparison
with ``model.keras`` also checks that the two agree.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from models.bundle import ModelBundle
from models.weights import F32

Format = Literal["tflite", "onnx"]
Quantization = Literal["float32", "float16", "int8"]
FORMATS: tuple[Format, ...] = get_args(Format)
QUANTIZATIONS: tuple[Quantization, ...] = get_args(Quantization)

# Largest |export - Keras| accepted, in units of the output scale
# max(1, max |Keras forecast|). Forecasts are in normalised units (the
# device's own standard deviation), so 1 is the natural scale; larger
# forecasts carry proportionally larger floating-point error.
TOLERANCE: dict[Quantization, float] = {
    # float32 arithmetic in another order than Keras' kernels (measured < 1e-7).
    "float32": 2e-5,
    # Weights rounded to float16 (11-bit mantissa), carried through the window
    # (measured ~5e-5).
    "float16": 1e-2,
    # int8 activations have 256 levels over each tensor's calibrated range (a
    # hidden-state step is 1/128) and the error compounds over the window.
    # Measured at window 32, 32 units: 0.012 untrained, 0.02 after a short
    # training on the synthetic fleet, 0.2 for a toy model trained hard on sines.
    "int8": 0.25,
}
# Windows the export is compared on.
PARITY_SAMPLES = 256
# Windows the int8 ranges are calibrated on: with 100, the tails of a
# 256-window parity sample fell outside the calibrated input range (max error
# 0.11 against 0.015 with 1024).
CALIBRATION_SAMPLES = 1024
PARITY_SEED, CALIBRATION_SEED = 0, 1


class ExportUnavailableError(RuntimeError):
    """The packages a format needs are not installed."""


@dataclass(frozen=True)
class ExportReport:
    """What one export produced (written as ``<file>.json``, printed by ``streamer export``)."""

    format: Format
    quantization: Quantization
    kind: str  # what the quantisation became: float32, float16_weights, full_integer, ...
    path: str
    bytes: int
    max_abs_error: float  # against the Keras model, over ``samples`` windows
    mean_abs_error: float
    output_scale: float
    tolerance: float  # TOLERANCE[quantization] * output_scale
    within_tolerance: bool
    samples: int
    calibration: str  # int8 calibration windows: "standard normal", "caller sample"; otherwise "none"
    window: int
    channels: int
    bundle_version: str
    runtime: str

    def to_json(self) -> dict[str, Any]:
        """Plain data for the JSON report."""
        return dataclasses.asdict(self)


def report_path(path: Path) -> Path:
    """Where the report of the export at ``path`` goes.

    >>> report_path(Path("out/model.tflite")).as_posix()
    'out/model.tflite.json'
    """
    return path.with_name(path.name + ".json")


def default_output(bundle: ModelBundle, fmt: Format, quantization: Quantization) -> Path:
    """``<version>-<quantization>.<format>`` in the working directory."""
    return Path(f"{bundle.version}-{quantization}.{fmt}")


def standard_windows(count: int, window: int, channels: int, seed: int) -> F32:
    """Normalised windows drawn from a standard normal (what normalised inputs look like)."""
    windows: F32 = np.random.default_rng(seed).standard_normal((count, window, channels), dtype=np.float32)
    return windows


def export_bundle(bundle: ModelBundle, fmt: Format, quantization: Quantization = "float32",
                  out: Path | None = None, *, sample: F32 | None = None,
                  calibration: F32 | None = None) -> ExportReport:
    """Export, compare with the Keras model, write the file and its report.

    Args:
        bundle: The bundle to export.
        fmt: ``tflite`` or ``onnx``.
        quantization: ``float32``, ``float16`` or ``int8``.
        out: The file to write (default :func:`default_output`); the report goes to :func:`report_path`.
        sample: Normalised windows ``(n, window, channels)`` to compare on
            (default: ``PARITY_SAMPLES`` standard-normal windows).
        calibration: Normalised windows for the int8 ranges (default:
            ``CALIBRATION_SAMPLES`` standard-normal windows, drawn apart from ``sample``).

    Raises:
        ExportUnavailableError: The format's packages are not installed.
        ValueError: Unknown format or quantisation, or sample windows of the wrong shape.
    """
    if fmt not in FORMATS or quantization not in QUANTIZATIONS:
        raise ValueError(f"cannot export format {fmt!r} with quantization {quantization!r}")
    window, channels = bundle.metadata.window, bundle.weights.channels
    sample = _windows(sample, PARITY_SAMPLES, window, channels, PARITY_SEED, "sample")
    calibration_source = "caller sample" if calibration is not None else "standard normal"
    calibration = _windows(calibration, CALIBRATION_SAMPLES, window, channels, CALIBRATION_SEED,
                           "calibration")

    if fmt == "tflite":
        from models import tflite_export

        data, kind = tflite_export.tflite_bytes(bundle.weights, window, quantization, calibration)
        forecast, runtime = tflite_export.run_tflite(data, sample), tflite_export.runtime_name()
    else:
        _require_onnx()
        from models import onnx_export

        data, kind = onnx_export.onnx_bytes(bundle.weights, window, quantization)
        forecast, runtime = onnx_export.run_onnx(data, sample), onnx_export.runtime_name()

    expected = np.asarray(bundle.keras_model()(sample, training=False), dtype=np.float32)[:, -1]
    error = np.abs(forecast.astype(np.float64) - expected)
    scale = max(1.0, float(np.max(np.abs(expected))))
    tolerance = TOLERANCE[quantization] * scale
    path = out if out is not None else default_output(bundle, fmt, quantization)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    report = ExportReport(
        format=fmt, quantization=quantization, kind=kind, path=str(path), bytes=len(data),
        max_abs_error=float(error.max()), mean_abs_error=float(error.mean()), output_scale=scale,
        tolerance=tolerance, within_tolerance=bool(error.max() <= tolerance), samples=len(sample),
        calibration=calibration_source if quantization == "int8" and fmt == "tflite" else "none",
        window=window, channels=channels, bundle_version=bundle.version, runtime=runtime,
    )
    report_path(path).write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return report


def _windows(given: F32 | None, count: int, window: int, channels: int, seed: int, what: str) -> F32:
    if given is None:
        return standard_windows(count, window, channels, seed)
    windows = np.asarray(given, dtype=np.float32)
    if windows.ndim != 3 or windows.shape[1:] != (window, channels) or len(windows) == 0:
        raise ValueError(f"{what} windows must have shape (n, {window}, {channels}), got {windows.shape}")
    return windows


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401  # imported where used; only its presence is checked here
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ExportUnavailableError(
            f"ONNX export needs the onnx and onnxruntime packages ({exc}); "
            "install them with: pip install 'streamer[export]'"
        ) from exc
