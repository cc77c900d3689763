"""One variant, one seed: train (or load), forecast offline, replay through the product path, score.

Usage: python run.py VARIANT SEED
  product  the bundle `streamer evaluate telemanom --out out/product_bundle_SEED` trained (harness check)
  base     own trainer, value only, k=1 (product recipe)
  exog     value + 54 command columns as inputs, k=1
  k5, k10  value only, head forecasts the next k values; residual of x_t against the forecast made at t-k
Writes out/VARIANT_seedSEED.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from harness import (SPEC, PrecomputedPredictor, evaluate_with, full_series, load_channels, sensor_forecasts,
                     stateful_forecasts)
from models.normalization import normalize_series

OUT = Path(__file__).parent / "out"


def main(variant: str, seed: int) -> None:
    rows, distinct = load_channels()
    exog = variant == "exog"
    k = int(variant[1:]) if variant.startswith("k") else 1
    info: dict = {}
    if variant == "product":
        from models.bundle import load_bundle

        model = load_bundle(OUT / f"product_bundle_{seed}").keras_model()
    else:
        from train_variant import train

        model, info = train([c.train for c in distinct], exog=exog, k=k, seed=seed)
    started = time.monotonic()
    forecasts, values = [], []
    for channel in distinct:
        series = full_series(channel)
        u, _, _ = normalize_series(SPEC, series[:, :1])
        inputs = np.concatenate([u, series[:, 1:]], axis=1) if exog else u
        outputs = stateful_forecasts(model, inputs.astype(np.float32), horizons=k)
        forecasts.append(sensor_forecasts(series[:, 0], outputs, k))
        values.append(series[:, 0])
    info["forecast_seconds"] = round(time.monotonic() - started, 1)
    predictor = PrecomputedPredictor(forecasts, values, f"{variant}-{seed}")
    report = evaluate_with(rows, predictor)
    doc = report.as_dict()
    doc["slot_mismatches"] = predictor.mismatches
    doc["training"] = info
    # Residual RMS on the test parts (sensor units), a forecast-quality figure independent of alerting.
    sq = [((v - f)[len(c.train):]) ** 2 for c, v, f in zip(distinct, values, forecasts, strict=True)]
    doc["test_residual_rms"] = float(np.sqrt(np.nanmean(np.concatenate(sq))))
    (OUT / f"{'harness_product' if variant == 'product' else variant}_seed{seed}.json").write_text(json.dumps(doc, indent=1))
    t = doc
    print(f"{variant} seed {seed}: P {t['precision']:.3f} R {t['recall']:.3f} F1 {t['f1']:.3f} "
          f"tp {t['tp']} fp {t['fp']} fn {t['fn']} alerted {t['alerted_fraction']} "
          f"mismatches {predictor.mismatches} rms {t['test_residual_rms']:.4f} info {info}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
