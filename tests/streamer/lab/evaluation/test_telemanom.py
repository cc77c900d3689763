"""`streamer evaluate telemanom` on a small synthetic corpus in the SMAP/MSL layout."""

import csv
import json
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt
import pytest

from streamer.cli import main
from streamer.config import Config
from streamer.lab.evaluation import events, telemanom
from streamer.lab.evaluation.recipe import configured


def write_corpus(root: Path, *, seed: int = 0) -> list[tuple[str, str, list[list[int]]]]:
    """Channels of sine-like telemetry plus one-hot command columns; big anomalies in test."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    plan = [("P-1", "SMAP", [[900, 960]]), ("P-2", "SMAP", [[400, 430], [1300, 1330]]),
            ("M-1", "MSL", [[1000, 1040]]), ("M-2", "MSL", [])]
    for index, (chan, _, anomalies) in enumerate(plan):
        period = 40.0 + 7 * index

        def signal(n: int, phase: float, period: float = period) -> npt.NDArray[np.float64]:
            t = np.arange(n) + phase
            wave: npt.NDArray[np.float64] = np.sin(2 * np.pi * t / period) + rng.normal(0, 0.05, n)
            return wave

        def commands(n: int) -> npt.NDArray[np.float64]:
            one_hot: npt.NDArray[np.float64] = np.eye(4)[rng.integers(0, 4, n)]
            return one_hot
        train = np.column_stack([signal(1500, 0.0), commands(1500)])
        test = np.column_stack([signal(1600, 1500.0), commands(1600)])
        for first, last in anomalies:
            test[first:last + 1, 0] += 4.0  # a level shift the length of the label
        np.save(root / "train" / f"{chan}.npy", train.astype(np.float32))
        np.save(root / "test" / f"{chan}.npy", test.astype(np.float32))
    with (root / "labeled_anomalies.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["chan_id", "spacecraft", "anomaly_sequences", "class", "num_values"])
        for chan, craft, anomalies in plan:
            writer.writerow([chan, craft, json.dumps(anomalies), "[point]" if anomalies else "[]", 1600])
    return plan


def test_read_corpus_parses_the_layout(tmp_path: Path) -> None:
    plan = write_corpus(tmp_path)
    channels = telemanom.read_corpus(tmp_path, tmp_path / "labeled_anomalies.csv")
    assert [c.chan_id for c in channels] == [p[0] for p in plan]
    assert channels[1].anomalies == [(400, 430), (1300, 1330)]
    assert channels[0].train.shape == (1500, 5) and channels[0].test.shape == (1600, 5)
    assert channels[2].spacecraft == "MSL"


def test_read_corpus_names_the_bad_file(tmp_path: Path) -> None:
    write_corpus(tmp_path)
    (tmp_path / "test" / "M-1.npy").unlink()
    with pytest.raises(ValueError, match=r"M-1\.npy"):
        telemanom.read_corpus(tmp_path, tmp_path / "labeled_anomalies.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("chan_id,spacecraft,anomaly_sequences\nP-1,SMAP,[[1, oops]]\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2"):
        telemanom.read_corpus(tmp_path, bad)


# The likelihood judges sustained departures of the residual; a one-step forecaster
# follows a level shift after one reading, so it needs range novelty to see them.
@pytest.mark.parametrize(("method", "range_margin"), [("zscore", None), ("dynamic", None),
                                                      ("likelihood", 0.02)])
def test_every_method_finds_the_labelled_shifts(tmp_path: Path, method: str, range_margin: float | None
                                                ) -> None:
    write_corpus(tmp_path)
    channels = telemanom.read_corpus(tmp_path, tmp_path / "labeled_anomalies.csv")
    config = configured(Config(), method=method, mode=None, bundle=None, channels=("value",),
                        range_margin=range_margin)
    report = telemanom.evaluate(config, channels)
    assert report.replay.method == method
    assert report.total.tp + report.total.fn == 4  # four labelled sequences
    assert report.total.recall >= 0.75, report.as_dict()
    assert set(report.spacecraft) == {"SMAP", "MSL"}
    assert report.replay.readings == sum(len(c.train) + len(c.test) for c in channels)


def test_cli_trains_detects_and_writes_json(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus")
    out_json = tmp_path / "result.json"
    code = main(["evaluate", "telemanom", "--data", str(tmp_path / "corpus"),
                 "--labels", str(tmp_path / "corpus" / "labeled_anomalies.csv"), "--epochs", "2",
                 "--out", str(tmp_path / "bundle"), "--method", "zscore", "--json", str(out_json)])
    assert code == 0
    document = json.loads(out_json.read_text())
    for key in ("precision", "recall", "f1", "spacecraft", "channels"):
        assert key in document
    assert set(document["spacecraft"]) == {"SMAP", "MSL"}
    assert document["tp"] + document["fn"] == 4
    assert document["recall"] >= 0.5
    assert (tmp_path / "bundle" / "bundle.json").is_file()


def write_labels_listing_a_channel_again(root: Path) -> Path:
    """The corpus' labels with P-2 listed twice more, as the published SMAP/MSL file lists a channel twice.

    The second P-2 row has another label set and another spacecraft; the third
    repeats the first row, so it must count exactly what the first counts.
    """
    path = root / "labels_again.csv"
    with (root / "labeled_anomalies.csv").open(newline="") as source:
        rows = list(csv.reader(source))
    rows.append(["P-2", "MSL", "[[1300, 1330]]", "[point]", "1600"])
    rows.append(rows[2])  # the first P-2 row (header, P-1, P-2, ...)
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_read_corpus_keeps_every_row_of_a_channel_listed_again(tmp_path: Path) -> None:
    write_corpus(tmp_path)
    channels = telemanom.read_corpus(tmp_path, write_labels_listing_a_channel_again(tmp_path))
    assert [c.key for c in channels] == ["P-1", "P-2", "M-1", "M-2", "P-2#2", "P-2#3"]
    assert [c.chan_id for c in channels][-2:] == ["P-2", "P-2"]
    assert channels[4].anomalies == [(1300, 1330)] and channels[4].spacecraft == "MSL"
    assert channels[4].train is channels[1].train  # loaded once
    assert list(telemanom.training_series(channels)) == ["P-1", "P-2", "M-1", "M-2"]


def test_a_channel_listed_again_is_replayed_once_and_scored_per_row(tmp_path: Path) -> None:
    write_corpus(tmp_path)
    channels = telemanom.read_corpus(tmp_path, write_labels_listing_a_channel_again(tmp_path))
    config = configured(Config(), method="zscore", mode=None, bundle=None, channels=("value",))
    # P-2's second shift repeats its first exactly, which the record gate holds
    # back by design (tests/streamer/thresholds/test_record.py); this test is
    # about rows of the labels file, so every flag of the method stands.
    thresholds = msgspec.structs.replace(config.thresholds, record_gate=msgspec.structs.replace(
        config.thresholds.record_gate, enabled=False))
    config = msgspec.structs.replace(config, thresholds=thresholds)
    report = telemanom.evaluate(config, channels)
    distinct = channels[:4]
    assert report.replay.readings == sum(len(c.train) + len(c.test) for c in distinct)
    document = report.as_dict()
    assert set(document["channels"]) == {"P-1", "P-2", "M-1", "M-2", "P-2#2", "P-2#3"}
    rows = report.channels
    assert rows["P-2#3"] == rows["P-2"]  # same labels against the same detections
    assert rows["P-2#2"].tp + rows["P-2#2"].fn == 1
    assert rows["P-2#2"].tp >= 1 and rows["P-2"].tp == 2, document  # the shift at 1300 is found
    # Every row counts once in the totals and once in its own row's spacecraft.
    assert report.total == events.total(rows.values())
    assert report.total.tp + report.total.fn == 4 + 1 + 2
    assert report.spacecraft["MSL"] == rows["M-1"] + rows["M-2"] + rows["P-2#2"]
    assert report.spacecraft["SMAP"] == rows["P-1"] + rows["P-2"] + rows["P-2#3"]
    assert document["spacecraft"]["MSL"] == report.spacecraft["MSL"].as_dict()


def test_alerted_fraction_shows_episodes_that_never_resolve(tmp_path: Path) -> None:
    write_corpus(tmp_path)
    channels = telemanom.read_corpus(tmp_path, tmp_path / "labeled_anomalies.csv")
    config = configured(Config(), method="zscore", mode=None, bundle=None, channels=("value",))
    resolving = telemanom.evaluate(config, channels)
    # Episodes that never resolve: the labels are still overlapped, but most test rows are "anomalous".
    alerts = msgspec.structs.replace(config.alerts, resolve_after=10**6)
    never = msgspec.structs.replace(config, alerts=alerts)
    unresolved = telemanom.evaluate(never, channels)
    assert unresolved.total.recall >= resolving.total.recall
    assert 0 < resolving.alerted_fraction < 0.2, resolving.as_dict()
    # Three of four channels alerted from their first label (rows 400-1000 of 1600) to the end.
    assert unresolved.alerted_fraction > 0.35 > 0.2 > resolving.alerted_fraction
    assert resolving.as_dict()["alerted_fraction"] == round(resolving.alerted_fraction, 4)


def test_cli_uses_the_configured_method_when_none_is_given(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus")
    corpus = tmp_path / "corpus"
    labels = corpus / "labeled_anomalies.csv"
    common = ["evaluate", "telemanom", "--data", str(corpus), "--labels", str(labels), "--bundle", "default",
              "--json", str(tmp_path / "result.json")]
    assert main(common) == 0
    assert json.loads((tmp_path / "result.json").read_text())["method"] == Config().thresholds.method
    (tmp_path / "dynamic.yaml").write_text("thresholds:\n  method: dynamic\n")
    assert main([*common, "--config", str(tmp_path / "dynamic.yaml")]) == 0
    assert json.loads((tmp_path / "result.json").read_text())["method"] == "dynamic"
