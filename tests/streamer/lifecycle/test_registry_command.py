"""``streamer model list | add | promote | rollback | shadow | history`` through ``streamer.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.registry import BundleRegistry
from streamer.cli import main
from tests.bundle_variants import bundle_variant, damage_weights

Capture = pytest.CaptureFixture[str]


def _model(capsys: Capture, *argv: str) -> tuple[int, list[str], list[str]]:
    """Run ``streamer model ARGV``; its exit code, stdout lines and stderr lines."""
    code = main(["model", *argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


@pytest.fixture
def bundles(tmp_path: Path) -> list[tuple[Path, str]]:
    """Three bundle directories of different versions, outside the registry."""
    return [bundle_variant(tmp_path / f"bundle-{n}", n, mse_ratio=0.5 + n / 10) for n in (1, 2, 3)]


def test_the_whole_workflow(tmp_path: Path, bundles: list[tuple[Path, str]], capsys: Capture) -> None:
    registry = str(tmp_path / "registry")
    (a_dir, a), (b_dir, b), (c_dir, c) = bundles
    assert _model(capsys, "add", str(a_dir), "--promote", "--note", "first", "--registry", registry) == (
        0, [a, f"current: (none) -> {a}"], [])
    assert _model(capsys, "add", str(b_dir), "--registry", registry) == (0, [b], [])
    assert _model(capsys, "add", str(c_dir), "--shadow", "--registry", registry) == (
        0, [c, f"candidate: (none) -> {c}"], [])
    assert _model(capsys, "promote", b, "--registry", registry) == (0, [f"current: {a} -> {b}"], [])
    assert _model(capsys, "shadow", b, "--registry", registry) == (0, [f"candidate: {c} -> {b}"], [])
    assert _model(capsys, "shadow", "--clear", "--registry", registry) == (
        0, [f"candidate: {b} -> (none)"], [])
    assert _model(capsys, "shadow", c, "--registry", registry) == (0, [f"candidate: (none) -> {c}"], [])
    # Promoting the candidate clears it, and the line says so.
    assert _model(capsys, "promote", c, "--note", "shadow looked good", "--registry", registry) == (
        0, [f"current: {b} -> {c}; candidate: {c} -> (none)"], [])
    assert _model(capsys, "rollback", "--note", "c misbehaves", "--registry", registry) == (
        0, [f"current: {c} -> {b}"], [])
    assert _model(capsys, "promote", b, "--registry", registry) == (0, [f"current: {b} (unchanged)"], [])

    code, out, _ = _model(capsys, "list", "--json", "--registry", registry)
    assert code == 0
    document = json.loads("\n".join(out))
    assert (document["current"], document["candidate"]) == (b, None)
    assert [(v["version"], v["names"]) for v in document["versions"]] == [(a, []), (b, ["current"]), (c, [])]
    assert document["versions"][2]["validation"]["mse_ratio_to_naive"] == pytest.approx(0.8)
    assert all(v["added_at"].endswith("Z") for v in document["versions"])
    assert Path(document["versions"][0]["path"]) == Path(registry) / "versions" / a

    code, out, _ = _model(capsys, "list", "--registry", registry)
    assert code == 0
    assert out[0].split() == ["VERSION", "NAMES", "ADDED", "VALIDATION"]
    assert [line.split()[:2] for line in out[1:]] == [[a, "-"], [b, "current"], [c, "-"]]
    assert "mse_ratio_to_naive=0.6" in out[1]

    code, out, _ = _model(capsys, "history", "--json", "--registry", registry)
    assert code == 0
    history = json.loads("\n".join(out))["history"]
    assert [(e["action"], e["previous"], e["version"]) for e in history] == [
        ("add", None, a), ("promote", None, a), ("add", None, b), ("add", None, c), ("shadow", None, c),
        ("promote", a, b), ("shadow", c, b), ("unshadow", b, None), ("shadow", None, c), ("promote", b, c),
        ("unshadow", c, None), ("rollback", c, b)]
    assert history[-1]["note"] == "c misbehaves"

    code, out, _ = _model(capsys, "history", "--registry", registry)
    assert code == 0
    assert len(out) == len(history)
    assert f"rollback  current: {c} -> {b}  by " in out[-1]
    assert out[-1].endswith("(c misbehaves)")


def test_the_registry_directory_comes_from_the_config(
        tmp_path: Path, bundles: list[tuple[Path, str]], capsys: Capture) -> None:
    registry = tmp_path / "registry"
    config = tmp_path / "config.yaml"
    config.write_text(f"predictor:\n  lstm:\n    registry: {registry}\n", encoding="utf-8")
    (a_dir, a), _, _ = bundles
    assert _model(capsys, "add", str(a_dir), "--promote", "--config", str(config)) == (
        0, [a, f"current: (none) -> {a}"], [])
    assert BundleRegistry(registry).pointer("current") == a
    # --registry wins over the config.
    other = tmp_path / "other"
    code = main(["model", "add", str(a_dir), "--config", str(config), "--registry", str(other)])
    assert (code, capsys.readouterr().out.splitlines()) == (0, [a])
    assert [info.version for info in BundleRegistry(other).versions()] == [a]


@pytest.mark.parametrize("argv", [["list"], ["history"], ["add", "default"], ["promote", "lstm-000000000000"],
                                  ["rollback"], ["shadow", "--clear"]])
def test_no_registry_directory_is_a_configuration_error(argv: list[str], capsys: Capture) -> None:
    code, out, err = _model(capsys, *argv)
    assert code == 2
    assert out == []
    assert err == ["streamer: <defaults>: predictor.lstm.registry: not set: name the bundle registry "
                   "directory here or pass --registry DIR"]


def _registry_with_current(tmp_path: Path, bundles: list[tuple[Path, str]]) -> BundleRegistry:
    registry = BundleRegistry(tmp_path / "registry")
    for directory, _ in bundles:
        registry.add(directory)
    registry.promote(bundles[0][1])
    return registry


def test_refusals_exit_1_with_one_line_and_change_nothing(
        tmp_path: Path, bundles: list[tuple[Path, str]], capsys: Capture) -> None:
    registry = _registry_with_current(tmp_path, bundles)
    root = str(registry.root)
    a, b, c = (version for _, version in bundles)
    damage_weights(registry.path_of(b))
    history_before = registry.history()
    refusals = {
        ("promote", "lstm-000000000000"): "no version 'lstm-000000000000'",
        ("promote", b): f"{b}: content does not match its version",
        ("shadow", b): f"{b}: content does not match its version",
        ("rollback",): "nothing to roll back to",
        ("add", str(tmp_path / "nowhere")): f"{tmp_path / 'nowhere'}: no such directory",
    }
    for argv, reason in refusals.items():
        code, out, err = _model(capsys, *argv, "--registry", root)
        assert (code, out) == (1, []), argv
        assert len(err) == 1, argv
        assert err[0].startswith(f"streamer model {argv[0]}: "), argv
        assert reason in err[0], argv
    assert registry.pointer("current") == a
    assert registry.pointer("candidate") is None
    assert registry.history() == history_before
    # The healthy versions are still usable.
    assert _model(capsys, "promote", c, "--registry", root) == (0, [f"current: {a} -> {c}"], [])


def test_reading_a_registry_that_does_not_exist_exits_1(tmp_path: Path, capsys: Capture) -> None:
    missing = tmp_path / "typo"
    for command in ("list", "history"):
        code, out, err = _model(capsys, command, "--registry", str(missing))
        assert (code, out) == (1, [])
        assert err == [f"streamer model {command}: no registry at {missing} (streamer model add creates it)"]
    assert not missing.exists()


def test_an_empty_registry_lists_nothing(tmp_path: Path, capsys: Capture) -> None:
    root = tmp_path / "registry"
    root.mkdir()
    assert _model(capsys, "list", "--registry", str(root)) == (0, [f"no versions in {root}"], [])
    code, out, _ = _model(capsys, "list", "--json", "--registry", str(root))
    assert code == 0
    assert json.loads("\n".join(out)) == {"registry": str(root), "current": None, "candidate": None,
                                          "versions": []}
