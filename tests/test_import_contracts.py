"""The layer rules in pyproject.toml (`[tool.importlinter]`, run by `make lint`) cover what they claim."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path
from typing import Any

import streamer

ROOT = Path(__file__).resolve().parents[1]


def contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {contract["name"]: contract for contract in config["tool"]["importlinter"]["contracts"]}


def test_the_runtime_contract_lists_every_top_level_module_but_the_lab() -> None:
    contract = next(c for name, c in contracts().items()
                    if name.startswith("the runtime never imports the lab"))
    top_level = {f"streamer.{info.name}" for info in pkgutil.iter_modules(streamer.__path__)}
    assert "streamer.lab" in top_level
    assert set(contract["source_modules"]) == top_level - {"streamer.lab"}
    assert contract["forbidden_modules"] == ["streamer.lab"]


def test_models_and_state_are_kept_below_the_daemon() -> None:
    by_source = {tuple(c.get("source_modules", ())): c
                 for c in contracts().values() if c["type"] == "forbidden"}
    assert by_source[("models",)]["forbidden_modules"] == ["streamer"]
    state_forbids = set(by_source[("streamer.state",)]["forbidden_modules"])
    assert {"streamer.scoring", "streamer.metrics"} <= state_forbids
