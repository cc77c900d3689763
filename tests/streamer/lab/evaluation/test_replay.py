import msgspec
import numpy as np
import pytest

from streamer.codec import ReadingDecoder, encode_reading
from streamer.config import Config
from streamer.lab.evaluation.replay import Series, replay
from streamer.scoring.pipeline import ScoringPipeline


def baseline_config(max_batch: int = 64) -> Config:
    config = Config()
    return msgspec.structs.replace(
        config,
        predictor=msgspec.structs.replace(config.predictor, kind="baseline"),
        batching=msgspec.structs.replace(config.batching, max_batch=max_batch),
    )


def fleet(devices: int = 5, length: int = 400, spike_at: int = 300) -> list[Series]:
    rng = np.random.default_rng(3)
    out = []
    for d in range(devices):
        n = length + 17 * d  # different lengths
        values = np.sin(np.arange(n) / 15.0) + rng.normal(0, 0.05, n)
        values[spike_at] += 6.0
        ts = 1_600_000_000_000 + np.arange(n, dtype=np.int64) * 1000
        out.append(Series(f"dev-{d}", ts, values[:, None]))
    return out


def test_replay_scores_every_row_and_matches_scoring_device_by_device() -> None:
    series = fleet()
    result = replay(baseline_config(), series)
    assert result.readings == sum(len(s) for s in series)
    assert not result.rejected
    warmup = Config().thresholds.warmup
    for scores in result.scores:
        assert np.isnan(scores[:warmup]).all()
        assert np.isfinite(scores[warmup:]).all()

    # The same readings, one device at a time through a fresh pipeline and the decoder.
    config = baseline_config()
    decoder = ReadingDecoder(["value"], device_id_pattern=config.readings.device_id_pattern,
                             max_message_bytes=config.readings.max_message_bytes,
                             max_future_ms=config.readings.max_future_ms)
    pipeline = ScoringPipeline(config)

    class Rec:
        def __init__(self, value: bytes) -> None:
            self.topic: str = "t"
            self.partition: int = 0
            self.offset: int = 0
            self.key: bytes | None = None
            self.value: bytes | None = value
            self.timestamp: int = 0

    for item, scores in zip(series, result.scores, strict=True):
        records = [Rec(encode_reading(item.device_id, int(t), float(v)))
                   for t, v in zip(item.ts_ms, item.values[:, 0], strict=True)]
        alone = pipeline.score(decoder.decode(records).readings).scores
        np.testing.assert_allclose(alone, scores, rtol=1e-12, equal_nan=True)


def test_replay_alerts_on_the_injected_spikes() -> None:
    series = fleet(spike_at=300)
    result = replay(baseline_config(), series)
    opened = {(a.device_id, a.ts) for a in result.alerts if a.event == "open"}
    for item in series:
        assert (item.device_id, int(item.ts_ms[300])) in opened


def test_replay_counts_rejected_rows_and_leaves_them_unscored() -> None:
    ts = 1_600_000_000_000 + np.arange(100, dtype=np.int64) * 1000
    ts[50] = ts[49]  # duplicate timestamp
    values = np.ones((100, 1))
    values[60, 0] = np.nan
    result = replay(baseline_config(), [Series("dup", ts, values)])
    assert sum(result.rejected.values()) == 2
    assert result.rejected["duplicate_timestamp"] == 1
    assert np.isnan(result.scores[0][[50, 60]]).all()


def test_replay_refuses_duplicate_device_ids() -> None:
    one = fleet(devices=1)[0]
    with pytest.raises(ValueError, match="unique"):
        replay(baseline_config(), [one, one])
