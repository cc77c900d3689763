"""Edge export: every format and quantisation matches the Keras model within its tolerance."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models import onnx_export, tflite_export
from models.architecture import ArchitectureSpec, build_forecaster
from models.bundle import BundleMetadata, ModelBundle, save_bundle
from models.export import (
    PARITY_SAMPLES,
    QUANTIZATIONS,
    TOLERANCE,
    ExportReport,
    Format,
    Quantization,
    export_bundle,
    report_path,
)
from models.normalization import NormalizationSpec
from streamer.cli import main

WINDOW = 8
EXPECTED_KIND = {
    ("tflite", "float32"): "float32", ("tflite", "float16"): "float16_weights",
    ("tflite", "int8"): tflite_export.FULL_INTEGER,
    ("onnx", "float32"): "float32", ("onnx", "float16"): "float16_weights", ("onnx", "int8"): "dynamic_range",
}
RUNNERS = {"tflite": tflite_export.run_tflite, "onnx": onnx_export.run_onnx}


def _bundle(path: Path, channels: int, layers: int) -> ModelBundle:
    spec = ArchitectureSpec(channels=channels, units=8, layers=layers)
    metadata = BundleMetadata(architecture=spec, normalization=NormalizationSpec(), window=WINDOW,
                              min_context=4, channels=tuple(f"c{i}" for i in range(channels)))
    return save_bundle(path, build_forecaster(spec, seed=3), metadata)


@pytest.fixture(scope="module", params=[1, 2], ids=["1ch", "2ch-2layers"])
def bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    channels = int(request.param)
    return _bundle(tmp_path_factory.mktemp("bundle"), channels, layers=channels)


@pytest.fixture(scope="module")
def keras_model(bundle: ModelBundle) -> Any:
    return bundle.keras_model()


@pytest.fixture(scope="module")
def reports(bundle: ModelBundle,
            tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], ExportReport]:
    out = tmp_path_factory.mktemp("exports")
    formats: tuple[Format, ...] = ("tflite", "onnx")
    return {(fmt, q): export_bundle(bundle, fmt, q, out / f"model-{q}.{fmt}")
            for fmt in formats for q in QUANTIZATIONS}


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_export_matches_keras_within_tolerance_and_reports_it(
    reports: dict[tuple[str, str], ExportReport], bundle: ModelBundle, keras_model: Any,
    fmt: Format, quantization: Quantization,
) -> None:
    report = reports[fmt, quantization]
    path = Path(report.path)
    assert path.is_file()
    assert report.bytes == path.stat().st_size
    assert (report.format, report.quantization, report.kind) == (fmt, quantization,
                                                                  EXPECTED_KIND[fmt, quantization])
    assert report.within_tolerance
    assert report.max_abs_error <= report.tolerance == TOLERANCE[quantization] * report.output_scale
    assert 0.0 <= report.mean_abs_error <= report.max_abs_error
    assert (report.samples, report.window) == (PARITY_SAMPLES, WINDOW)
    assert report.channels == bundle.weights.channels
    assert report.bundle_version == bundle.version
    assert json.loads(report_path(path).read_text(encoding="utf-8")) == report.to_json()

    # The file itself, on windows the export never saw, one at a time and as a batch.
    windows = np.random.default_rng(42).normal(size=(5, WINDOW, bundle.weights.channels)).astype(np.float32)
    expected = np.asarray(keras_model(windows))[:, -1]
    run = RUNNERS[fmt]
    batched = run(path.read_bytes(), windows)
    one_by_one = np.concatenate([run(path.read_bytes(), windows[i:i + 1]) for i in range(len(windows))])
    assert batched.shape == expected.shape
    np.testing.assert_allclose(batched, expected, atol=report.tolerance, rtol=0)
    np.testing.assert_allclose(one_by_one, batched, atol=report.tolerance, rtol=0)


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_float16_file_is_smaller_than_float32(reports: dict[tuple[str, str], ExportReport], fmt: str) -> None:
    assert reports[fmt, "float16"].bytes < reports[fmt, "float32"].bytes


def test_float32_parity_is_float32_rounding(reports: dict[tuple[str, str], ExportReport]) -> None:
    assert reports["tflite", "float32"].max_abs_error < 1e-5
    assert reports["onnx", "float32"].max_abs_error < 1e-5


def test_int8_falls_back_to_float_kernels_when_full_integer_conversion_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import tensorflow as tf
    from tensorflow.lite.python.convert_phase import ConverterError

    convert = tflite_export._convert

    def no_int8_only(converter: Any) -> bytes:
        if tf.lite.OpsSet.TFLITE_BUILTINS_INT8 in converter.target_spec.supported_ops:
            raise ConverterError("op has no int8 kernel")
        return convert(converter)

    monkeypatch.setattr(tflite_export, "_convert", no_int8_only)
    bundle = _bundle(tmp_path / "bundle", channels=1, layers=1)
    report = export_bundle(bundle, "tflite", "int8", tmp_path / "model.tflite")
    assert report.kind == tflite_export.FLOAT_FALLBACK
    assert report.within_tolerance
    assert "no full-integer int8 conversion" in caplog.text


def test_tflite_runs_on_tensorflows_interpreter_without_litert(
    reports: dict[tuple[str, str], ExportReport], monkeypatch: pytest.MonkeyPatch
) -> None:
    # tf.lite.Interpreter warns that it is deprecated; the suite turns warnings into errors.
    path = Path(reports["tflite", "float32"].path)
    windows = np.zeros((2, WINDOW, reports["tflite", "float32"].channels), np.float32)
    with_litert = tflite_export.run_tflite(path.read_bytes(), windows)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    np.testing.assert_array_equal(tflite_export.run_tflite(path.read_bytes(), windows), with_litert)


def test_sample_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "bundle", channels=1, layers=1)
    with pytest.raises(ValueError, match=r"shape \(n, 8, 1\)"):
        export_bundle(bundle, "onnx", sample=np.zeros((4, 5, 1), np.float32))


def test_cli_exports_and_prints_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _bundle(tmp_path / "bundle", channels=1, layers=1)
    out = tmp_path / "edge" / "model.onnx"
    assert main(["export", str(bundle.path), "--format", "onnx", "--quantize", "float16",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(report_path(out).read_text(encoding="utf-8"))
    assert (printed["format"], printed["quantization"], printed["path"]) == ("onnx", "float16", str(out))
    assert printed["bytes"] == out.stat().st_size


def test_cli_without_onnx_packages_exits_2_saying_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bundle = _bundle(tmp_path / "bundle", channels=1, layers=1)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out = tmp_path / "model.onnx"
    assert main(["export", str(bundle.path), "--format", "onnx", "--out", str(out)]) == 2
    assert "pip install 'streamer[export]'" in caplog.text
    assert not out.exists()


def test_cli_on_a_missing_bundle_exits_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert main(["export", str(tmp_path / "absent"), "--format", "tflite"]) == 2
    assert "cannot load bundle" in caplog.text
