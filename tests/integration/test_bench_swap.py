"""``streamer bench swap`` in a tiny configuration against the session broker.

Every step of the real benchmark runs from the command line (a registry
with two versions, a daemon process under live load, the promotion, the
shadow drains, the accounting); the JSON must hold what the issue's checks
read, and no reading may be lost or scored twice. No timing assertions: the
figures depend on the machine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer.cli import main
from streamer.config import Config
from streamer.embedded_broker import EmbeddedBroker

pytestmark = pytest.mark.integration


def test_a_swap_under_load_loses_and_repeats_nothing(broker: EmbeddedBroker,
                                                     config_factory: Callable[..., Config],
                                                     write_config: Callable[[Config, Path], Path],
                                                     tmp_path: Path) -> None:
    config_path = write_config(config_factory(), tmp_path / "config.yaml")
    out = tmp_path / "swap.json"
    code = main(["bench", "swap", "--config", str(config_path),
                 "--bootstrap-servers", broker.bootstrap_servers,
                 "--workdir", str(tmp_path / "run"), "--devices", "300", "--rate", "1500",
                 "--measure-seconds", "2", "--partitions", "3", "--shadow-rounds", "1",
                 "--shadow-readings", "6000", "--shadow-timeout", "8", "--json", str(out)])
    record = json.loads(out.read_text())
    assert code == 0, record["accounting"]
    assert record["readings_lost"] == 0 and record["readings_scored_twice"] == 0
    accounting = record["accounting"]
    assert accounting["scored"] + accounting["warmup"] == accounting["produced"] > 0
    assert accounting["committed_matches_produced"] and accounting["rejected_as_repeats"] == 0

    # The daemon moved from the registry's current to the relabelled copy.
    versions, swap = record["versions"], record["swap"]
    assert versions["from"] != versions["to"]
    assert (swap["version_before"], swap["version_after"]) == (versions["from"], versions["to"])
    assert record["swap_seconds"] > 0 and swap["model_pauses"]["count"] > 0
    assert isinstance(record["max_pause_ms"], float) and record["max_pause_ms"] > 0

    rates = record["readings_per_s"]
    assert set(rates) == {"before", "during", "after"}
    assert all(rate is not None and rate > 0 for rate in rates.values()), rates
    shadow = record["shadow_readings_per_s"]
    assert set(shadow) == {"without", "with"} and shadow["without"] > 0
    # Until the daemon scores a candidate in shadow, the "with" side says why it is missing.
    assert (shadow["with"] or 0) > 0 or record["shadow"]["with_skipped"]
    assert "cores" in record["machine"]
    assert record["daemon"]["exit_code"] == 0
