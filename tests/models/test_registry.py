"""The bundle registry on real directories: copies, pointers, the current stack, history."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.bundle import BundleError
from models.registry import HISTORY_FILE, VERSIONS_DIR, BundleRegistry, RegistryError
from tests.bundle_variants import bundle_variant, damage_weights


@pytest.fixture
def registry(tmp_path: Path) -> BundleRegistry:
    return BundleRegistry(tmp_path / "registry")


def _add(registry: BundleRegistry, tmp_path: Path, variant: int) -> str:
    source, version = bundle_variant(tmp_path / f"source-{variant}", variant)
    assert registry.add(source) == version
    return version


def _actions(registry: BundleRegistry) -> list[tuple[str, str | None, str | None]]:
    return [(entry.action, entry.previous, entry.version) for entry in registry.history()]


def test_add_copies_the_bundle_so_the_source_can_go(registry: BundleRegistry, tmp_path: Path) -> None:
    source, version = bundle_variant(tmp_path / "source", 1)
    assert registry.add(source, note="first") == version
    shutil.rmtree(source)
    assert registry.path_of(version) == registry.root / VERSIONS_DIR / version
    registry.promote(version)
    loaded = registry.load("current")
    assert loaded is not None
    assert loaded.version == version
    assert loaded.path == registry.root / VERSIONS_DIR / version
    (entry, _) = registry.history()
    assert (entry.action, entry.version, entry.note) == ("add", version, "first")


def test_adding_a_registered_version_again_changes_nothing(registry: BundleRegistry, tmp_path: Path) -> None:
    version = _add(registry, tmp_path, 1)
    again, same = bundle_variant(tmp_path / "again", 1)
    assert same == version
    assert registry.add(again) == version
    assert [info.version for info in registry.versions()] == [version]
    assert _actions(registry) == [("add", None, version)]


def test_a_damaged_bundle_is_not_added(registry: BundleRegistry, tmp_path: Path) -> None:
    source, _ = bundle_variant(tmp_path / "source", 1)
    damage_weights(source)
    with pytest.raises(BundleError, match="does not match its version"):
        registry.add(source)
    assert registry.versions() == []
    assert registry.history() == []


def test_a_half_copied_incoming_directory_is_not_a_version(registry: BundleRegistry, tmp_path: Path) -> None:
    version = _add(registry, tmp_path, 1)
    # What a copy killed half-way leaves: a hidden directory with part of a bundle.
    incoming = registry.root / VERSIONS_DIR / ".incoming-0123abcd"
    incoming.mkdir()
    shutil.copy(registry.path_of(version) / "bundle.json", incoming / "bundle.json")
    assert [info.version for info in registry.versions()] == [version]
    with pytest.raises(RegistryError, match="not a version"):
        registry.path_of(incoming.name)
    with pytest.raises(RegistryError):
        registry.promote(incoming.name)
    assert registry.pointer("current") is None


def test_versions_are_listed_oldest_first_with_their_names_and_validation(
        registry: BundleRegistry, tmp_path: Path) -> None:
    # Added within one second: the order still follows the history, not the version's hash.
    added = [_add(registry, tmp_path, variant) for variant in (5, 3, 9, 1)]
    registry.promote(added[1])
    registry.shadow(added[2])
    infos = registry.versions()
    assert [info.version for info in infos] == added
    assert [info.names for info in infos] == [(), ("current",), ("candidate",), ()]
    assert all(info.added_at.endswith("Z") for info in infos)
    assert infos[0].validation["mse_ratio_to_naive"] == 0.5


def test_promote_and_rollback_walk_the_current_stack(registry: BundleRegistry, tmp_path: Path) -> None:
    a, b, c = (_add(registry, tmp_path, variant) for variant in (1, 2, 3))
    assert registry.promote(a) is None
    assert registry.promote(b) == a
    assert registry.promote(c) == b
    assert registry.current_stack() == [a, b, c]
    assert registry.rollback(note="c misbehaves") == b
    assert registry.pointer("current") == b
    assert registry.rollback() == a
    assert registry.pointer("current") == a
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()
    assert registry.pointer("current") == a
    assert registry.history()[-1].action == "rollback"


def test_promote_after_rollback_pushes_onto_what_is_left(registry: BundleRegistry, tmp_path: Path) -> None:
    a, b, c, d = (_add(registry, tmp_path, variant) for variant in (1, 2, 3, 4))
    for version in (a, b, c):
        registry.promote(version)
    assert registry.rollback() == b
    assert registry.promote(d) == b
    assert registry.current_stack() == [a, b, d]
    assert registry.rollback() == b
    assert registry.rollback() == a


def test_promoting_the_current_version_again_changes_nothing(
        registry: BundleRegistry, tmp_path: Path) -> None:
    a = _add(registry, tmp_path, 1)
    registry.promote(a)
    assert registry.promote(a) == a
    assert [action for action, _, _ in _actions(registry)] == ["add", "promote"]


def test_an_unknown_version_is_refused(registry: BundleRegistry, tmp_path: Path) -> None:
    a = _add(registry, tmp_path, 1)
    registry.promote(a)
    for bad in ("lstm-000000000000", "../versions", ""):
        with pytest.raises(RegistryError):
            registry.promote(bad)
        with pytest.raises(RegistryError):
            registry.shadow(bad)
    assert registry.pointer("current") == a
    assert registry.pointer("candidate") is None


def test_shadow_sets_and_clears_the_candidate(registry: BundleRegistry, tmp_path: Path) -> None:
    a, b = (_add(registry, tmp_path, variant) for variant in (1, 2))
    assert registry.shadow(a) is None
    assert registry.shadow(b, note="try b") == a
    assert registry.pointer("candidate") == b
    assert registry.shadow(None) == b
    assert registry.pointer("candidate") is None
    assert not (registry.root / "candidate").exists()
    # Clearing nothing records nothing.
    assert registry.shadow(None) is None
    assert _actions(registry)[2:] == [("shadow", None, a), ("shadow", a, b), ("unshadow", b, None)]


def test_promoting_the_candidate_clears_it(registry: BundleRegistry, tmp_path: Path) -> None:
    a, b = (_add(registry, tmp_path, variant) for variant in (1, 2))
    registry.promote(a)
    registry.shadow(b)
    assert registry.promote(b) == a
    assert registry.pointer("current") == b
    assert registry.pointer("candidate") is None
    assert registry.history()[-1].action == "unshadow"
    assert registry.load("candidate") is None


def test_a_version_damaged_after_it_was_added_is_refused(registry: BundleRegistry, tmp_path: Path) -> None:
    a, b, c = (_add(registry, tmp_path, variant) for variant in (1, 2, 3))
    registry.promote(a)
    registry.shadow(c)
    damage_weights(registry.path_of(b))
    with pytest.raises(BundleError, match=rf"{b}: content does not match its version"):
        registry.promote(b)
    with pytest.raises(BundleError, match=b):
        registry.shadow(b)
    assert registry.pointer("current") == a
    assert registry.pointer("candidate") == c
    assert registry.current_stack() == [a]


def test_rollback_to_a_damaged_version_is_refused(registry: BundleRegistry, tmp_path: Path) -> None:
    a, b = (_add(registry, tmp_path, variant) for variant in (1, 2))
    registry.promote(a)
    registry.promote(b)
    damage_weights(registry.path_of(a))
    with pytest.raises(BundleError, match=a):
        registry.rollback()
    assert registry.pointer("current") == b
    assert registry.current_stack() == [a, b]


def test_history_survives_a_torn_last_line(registry: BundleRegistry, tmp_path: Path) -> None:
    a, b, c = (_add(registry, tmp_path, variant) for variant in (1, 2, 3))
    registry.promote(a)
    registry.promote(b)
    # A crash in the middle of an append: half a JSON object, no newline.
    with (registry.root / HISTORY_FILE).open("a", encoding="utf-8") as file:
        file.write('{"action": "promote", "at": "2026-')
    assert [action for action, _, _ in _actions(registry)] == ["add", "add", "add", "promote", "promote"]
    # The next change starts a line of its own: it is not glued onto the torn one and lost.
    registry.promote(c)
    assert registry.current_stack() == [a, b, c]
    assert registry.rollback() == b


def test_load_returns_the_bundles_the_names_point_at(registry: BundleRegistry, tmp_path: Path) -> None:
    assert registry.load("current") is None
    a, b = (_add(registry, tmp_path, variant) for variant in (1, 2))
    registry.promote(a)
    registry.shadow(b)
    current, candidate = registry.load("current"), registry.load("candidate")
    assert current is not None
    assert candidate is not None
    assert (current.version, candidate.version) == (a, b)
    assert current.metadata.training["variant"] == 1


def test_a_current_set_by_hand_becomes_a_rollback_target(registry: BundleRegistry, tmp_path: Path) -> None:
    a, b, c = (_add(registry, tmp_path, variant) for variant in (1, 2, 3))
    (registry.root / "current").write_text(a + "\n", encoding="utf-8")
    assert registry.promote(b) == a
    assert registry.rollback() == a
    # Also when the history already has a stack that the hand edit left behind.
    registry.promote(b)
    (registry.root / "current").write_text(c + "\n", encoding="utf-8")
    assert registry.rollback() == b
    assert registry.rollback() == a
