"""What ``streamer evaluate suite`` reports: figures over seeds beside published ones, as a table and JSON."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from rich.table import Table

from streamer.config import Config, masked
from streamer.lab.evaluation import nab_scoring, skab, skab_scoring, telemanom
from streamer.lab.evaluation.suite_corpora import CorpusSpec, Layout, SeedRun

# The published rows shown beside ours (the full tables are in nab_scoring and
# skab_scoring; each evaluate command prints them).
NAB_REFERENCES = ("ARTime", "Numenta HTM")
SKAB_OUTLIER_REFERENCE = "Conv-AE"
SKAB_CHANGEPOINT_REFERENCE = "MSCRED"

# Headline metrics of each layout, in table order: label and decimals.
METRICS: Mapping[Layout, Mapping[str, tuple[str, int]]] = {
    "nab": {"standard": ("standard", 2), "reward_low_FP_rate": ("low FP", 2),
            "reward_low_FN_rate": ("low FN", 2)},
    "telemanom": {"precision": ("precision", 3), "recall": ("recall", 3), "f1": ("F1", 3),
                  "alerted_fraction": ("share of test rows alerted", 3)},
    "skab": {"f1": ("F1", 3), "far": ("FAR %", 2), "mar": ("MAR %", 2),
             "nab_standard": (f"NAB {skab.DEFAULT_WINDOW_SECONDS} s standard", 2),
             "nab_reward_low_FP_rate": (f"NAB {skab.DEFAULT_WINDOW_SECONDS} s low FP", 2),
             "nab_reward_low_FN_rate": (f"NAB {skab.DEFAULT_WINDOW_SECONDS} s low FN", 2)},
}
_SPACECRAFT_METRICS = ("precision", "recall", "f1")


@dataclass(frozen=True)
class Spread:
    """One metric over the training seeds: mean, smallest, largest, and each seed's value."""

    mean: float
    low: float
    high: float
    by_seed: dict[int, float]

    def as_dict(self) -> dict[str, Any]:
        """For JSON (seeds become string keys)."""
        return {"mean": round(self.mean, 4), "min": self.low, "max": self.high,
                "by_seed": {str(seed): value for seed, value in self.by_seed.items()}}


def spread(by_seed: Mapping[int, float]) -> Spread:
    """Mean, minimum and maximum of one metric's values by seed.

    >>> s = spread({7: 0.5, 8: 0.25, 9: 0.9})
    >>> round(s.mean, 4), s.low, s.high
    (0.55, 0.25, 0.9)
    """
    if not by_seed:
        raise ValueError("no values to aggregate")
    values = list(by_seed.values())
    return Spread(sum(values) / len(values), min(values), max(values), dict(by_seed))


def aggregate(metrics_by_seed: Mapping[int, Mapping[str, float]]) -> dict[str, Spread]:
    """Every metric's :class:`Spread` over the seeds, in the first seed's order.

    A metric some seed lacks (a spacecraft it did not report) spreads over
    the seeds that have it.

    >>> agg = aggregate({7: {"f1": 0.5, "recall": 1.0}, 8: {"f1": 0.7, "recall": 0.5}})
    >>> [(name, round(s.mean, 2), s.low, s.high) for name, s in agg.items()]
    [('f1', 0.6, 0.5, 0.7), ('recall', 0.75, 0.5, 1.0)]
    """
    names = list(dict.fromkeys(name for metrics in metrics_by_seed.values() for name in metrics))
    return {name: spread({seed: values[name] for seed, values in metrics_by_seed.items() if name in values})
            for name in names}


@dataclass(frozen=True)
class Reference:
    """A published figure shown beside ours."""

    detector: str
    value: float


def references(layout: Layout, metric: str, spacecraft: Collection[str] = ()) -> list[Reference]:
    """The published figures for ``metric`` of a corpus in ``layout``.

    A telemanom corpus has one when it holds exactly one spacecraft with a
    published result (``spacecraft``: the ones it holds).

    >>> [(r.detector, r.value) for r in references("nab", "standard")]
    [('ARTime', 74.85), ('Numenta HTM', 70.1)]
    >>> [(r.detector, round(r.value, 3)) for r in references("telemanom", "f1", {"MSL"})]
    [('telemanom (MSL)', 0.806)]
    >>> references("telemanom", "f1", {"MSL", "SMAP"})
    []
    """
    if layout == "nab":
        fields = {"standard": "standard", "reward_low_FP_rate": "reward_low_fp",
                  "reward_low_FN_rate": "reward_low_fn"}
        rows = {row.detector: row for row in nab_scoring.published_scoreboard()}
        if metric not in fields:
            return []
        return [Reference(name, float(getattr(rows[name], fields[metric]))) for name in NAB_REFERENCES]
    if layout == "skab":
        return _skab_references(metric)
    if metric not in _SPACECRAFT_METRICS or len(spacecraft) != 1:
        return []
    (craft,) = spacecraft
    counts = telemanom.PUBLISHED.get(craft)
    return [] if counts is None else [Reference(f"{telemanom.PUBLISHED_DETECTOR} ({craft})",
                                                float(getattr(counts, metric)))]


def _skab_references(metric: str) -> list[Reference]:
    value: float | None = None
    detector = SKAB_OUTLIER_REFERENCE
    if metric in ("f1", "far", "mar"):
        outlier = next(row for row in skab_scoring.PUBLISHED_OUTLIER if row.detector == detector)
        value = getattr(outlier, metric)
    else:
        detector = SKAB_CHANGEPOINT_REFERENCE
        fields = {"nab_standard": "standard", "nab_reward_low_FP_rate": "low_fp",
                  "nab_reward_low_FN_rate": "low_fn"}
        rows = skab_scoring.PUBLISHED_CHANGEPOINT.get(skab.DEFAULT_WINDOW_SECONDS, ())
        changepoint = next((row for row in rows if row.detector == detector), None)
        if metric in fields and changepoint is not None:
            value = getattr(changepoint, fields[metric])
    return [] if value is None else [Reference(detector, value)]


@dataclass(frozen=True)
class CorpusResult:
    """Every seed's run of one corpus."""

    spec: CorpusSpec
    runs: list[SeedRun]
    seconds: float  # reading, training and replaying, all seeds

    @property
    def metrics(self) -> dict[str, Spread]:
        """The headline metrics over the seeds."""
        return aggregate({run.seed: run.metrics for run in self.runs})

    @property
    def spacecraft(self) -> dict[str, dict[str, Spread]]:
        """Telemanom: precision, recall and F1 per spacecraft over the seeds (empty otherwise)."""
        crafts = sorted({craft for run in self.runs for craft in run.spacecraft})
        return {craft: aggregate({run.seed: run.spacecraft[craft] for run in self.runs
                                  if craft in run.spacecraft}) for craft in crafts}

    def references(self, metric: str) -> list[Reference]:
        """The published figures for one headline metric."""
        return references(self.spec.layout, metric, self.spacecraft)

    def as_dict(self) -> dict[str, Any]:
        """For the suite's JSON document."""
        document: dict[str, Any] = {
            "layout": self.spec.layout,
            "path": str(self.spec.path),
            "seconds": round(self.seconds, 1),
            "model_versions": [run.model_version for run in self.runs],
            "metrics": {name: item.as_dict() for name, item in self.metrics.items()},
        }
        if self.spec.layout == "telemanom":
            document["spacecraft"] = {craft: {name: item.as_dict() for name, item in metrics.items()}
                                      for craft, metrics in self.spacecraft.items()}
        document["published"] = {name: [{"detector": ref.detector, "value": ref.value}
                                        for ref in self.references(name)] for name in self.metrics}
        document["runs"] = [run.as_dict() for run in self.runs]
        return document


def config_section(config: Config) -> dict[str, Any]:
    """The configuration every corpus ran with: a digest of all of it and the sections that decide alerts."""
    data = masked(config)
    # The Alertmanager bridge's section decides nothing about detection; left out, digests
    # recorded before it existed (benchmarks/detection/) still match the same detector.
    detector = {name: section for name, section in data.items() if name != "alertmanager"}
    digest = hashlib.sha256(msgspec.json.encode(detector, order="sorted")).hexdigest()
    lstm = config.predictor.lstm
    return {"digest": f"sha256:{digest[:16]}", "thresholds": data["thresholds"], "alerts": data["alerts"],
            "predictor": {"mode": lstm.mode, "backend": lstm.backend}, "buffers": data["buffers"]}


def fleet_section(summary: Mapping[str, Any], *, duration_s: float, bundle: str) -> dict[str, Any]:
    """The simulated fleet's part of the JSON document, from ``streamer demo``'s summary."""
    return {"duration_s": duration_s, "bundle": bundle, "detection_rate": dict(summary["detection_rate"]),
            "false_alerts": summary["false_alerts"], "seconds": summary["duration_s"],
            "summary": dict(summary)}


def suite_document(results: Sequence[CorpusResult], *, seeds: Sequence[int], config: Config,
                   skipped: Sequence[Mapping[str, str]], fleet: Mapping[str, Any] | None, seconds: float,
                   complete: bool) -> dict[str, Any]:
    """The JSON document ``streamer evaluate suite --json`` writes.

    ``complete`` is False while corpora are still to run (the document is
    rewritten after each one, so a long run that stops keeps what it did).
    """
    return {
        "complete": complete,
        "seeds": list(seeds),
        "config": config_section(config),
        "corpora": {result.spec.name: result.as_dict() for result in results},
        "skipped": [dict(item) for item in skipped],
        "fleet": None if fleet is None else dict(fleet),
        "seconds": round(seconds, 1),
    }


def _figure(item: Spread, digits: int) -> str:
    if item.low == item.high:
        return f"{item.mean:.{digits}f}"
    # An en dash: the bounds may be negative (SKAB's low-FP profile).
    return f"{item.mean:.{digits}f} [{item.low:.{digits}f}–{item.high:.{digits}f}]"  # noqa: RUF001


def _published(refs: Sequence[Reference], digits: int) -> str:
    return ", ".join(f"{ref.detector} {ref.value:.{digits}f}" for ref in refs) or "-"


def scoreboard(results: Sequence[CorpusResult], seeds: Sequence[int],
               fleet: Mapping[str, Any] | None = None) -> Table:
    """One table: per corpus and metric, our mean, minimum and maximum over the seeds, and published ones."""
    table = Table(title=f"streamer evaluate suite: seeds {' '.join(map(str, seeds))}")
    for column in ("corpus", "metric", "streamer mean [min–max]", "published"):  # noqa: RUF001  # as above
        table.add_column(column, justify="right" if column.startswith("streamer") else "left")
    for result in results:
        spec = result.spec
        kind = "" if spec.name == spec.layout else f" ({spec.layout})"
        label = f"{spec.name}{kind}, {result.seconds:.0f} s"
        metrics = result.metrics
        for name, (title, digits) in METRICS[spec.layout].items():
            if name in metrics:
                table.add_row(label, title, _figure(metrics[name], digits),
                              _published(result.references(name), digits))
                label = ""
        crafts = result.spacecraft
        if len(crafts) > 1:  # one spacecraft's figures are the totals
            for craft, craft_metrics in crafts.items():
                for name in _SPACECRAFT_METRICS:
                    title, digits = METRICS["telemanom"][name]
                    table.add_row("", f"{title} ({craft})", _figure(craft_metrics[name], digits),
                                  _published(references("telemanom", name, {craft}), digits))
        table.add_section()
    if fleet is not None:
        label = f"simulated fleet (demo, {fleet['seconds']:.0f} s)"
        for kind, rate in fleet["detection_rate"].items():
            table.add_row(label, f"detection rate {kind}", f"{rate:.3f}", "-")
            label = ""
        table.add_row(label, "false alerts", str(fleet["false_alerts"]), "-")
    return table
