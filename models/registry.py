"""A bundle registry: versioned bundles on a disk or mounted volume, and the names that point at them.

Layout::

    <root>/versions/<version>/   one bundle per content version (models.bundle)
    <root>/current               the version the daemons run (one line)
    <root>/candidate             the version scored in shadow beside it (absent: none)
    <root>/history.jsonl         every change of a name, one JSON object per line

A name is a small file replaced with ``os.replace`` (atomic on POSIX, on
local disks and on the network file systems Kubernetes mounts), so a reader
sees the old version or the new one, never a torn file. Bundles are copied
into a hidden directory first and renamed into ``versions/`` when complete,
so a daemon never loads half a bundle. Changes take an exclusive lock on
``<root>/.lock`` so two commands cannot interleave their history.

``current`` is a stack kept in the history: :meth:`BundleRegistry.promote`
pushes a version and :meth:`BundleRegistry.rollback` pops one, so rollback
always returns to the version that ran before the latest promotion still in
force, and repeated rollbacks walk further back. A ``current`` that the
history does not have on top of its stack (written by hand, or swapped just
before a crash cut its history line) is recorded as promoted before the next
change, so rollback can return to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from models.bundle import BundleError, ModelBundle, load_bundle

VERSIONS_DIR = "versions"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".lock"
PointerName = Literal["current", "candidate"]
POINTER_NAMES: tuple[PointerName, ...] = ("current", "candidate")
Action = Literal["add", "promote", "rollback", "shadow", "unshadow"]


class RegistryError(ValueError):
    """A registry operation that cannot be done; the message says why."""


@dataclass(frozen=True)
class HistoryEntry:
    """One change of the registry."""

    at: str  # ISO 8601, UTC
    action: Action
    version: str | None  # the version the name points at afterwards (None: cleared)
    previous: str | None  # what it pointed at before
    by: str
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """One line of ``history.jsonl``."""
        return {"at": self.at, "action": self.action, "version": self.version, "previous": self.previous,
                "by": self.by, "note": self.note}


@dataclass(frozen=True)
class VersionInfo:
    """A registered version and the names that point at it."""

    version: str
    path: Path
    added_at: str  # from the history; "" when added by hand
    names: tuple[PointerName, ...]
    validation: dict[str, float]


class BundleRegistry:
    """A registry directory (created on first change)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ reading
    def pointer(self, name: PointerName) -> str | None:
        """The version ``name`` points at, or None."""
        try:
            text = (self.root / name).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def path_of(self, version: str) -> Path:
        """The directory of a registered version.

        Raises:
            RegistryError: No such version is registered.
        """
        if not version or "/" in version or version.startswith("."):
            raise RegistryError(f"not a version: {version!r}")
        path = self.root / VERSIONS_DIR / version
        if not path.is_dir():
            raise RegistryError(f"no version {version!r} in {self.root}")
        return path

    def load(self, name: PointerName) -> ModelBundle | None:
        """The bundle ``name`` points at (None when the name is unset).

        Raises:
            RegistryError: The name points at a version that is not registered.
            BundleError: The bundle is damaged (see :func:`models.bundle.load_bundle`).
        """
        version = self.pointer(name)
        if version is None:
            return None
        bundle = load_bundle(self.path_of(version))
        if bundle.version != version:
            raise BundleError(f"{name} names {version!r} but the bundle's content is {bundle.version!r}")
        return bundle

    def versions(self) -> list[VersionInfo]:
        """Every registered version, oldest first (by when it was added)."""
        directory = self.root / VERSIONS_DIR
        if not directory.is_dir():
            return []
        # Position in the history orders versions added within the same second.
        added = {entry.version: (position, entry.at) for position, entry in enumerate(self.history())
                 if entry.action == "add" and entry.version}
        names = {name: self.pointer(name) for name in POINTER_NAMES}
        found: list[tuple[int, VersionInfo]] = []
        for path in directory.iterdir():
            if not path.is_dir() or path.name.startswith("."):
                continue
            try:
                validation = dict(json.loads((path / "bundle.json").read_text(encoding="utf-8"))
                                  .get("validation", {}))
            except (OSError, ValueError, AttributeError):
                validation = {}
            pointing = tuple(name for name in POINTER_NAMES if names[name] == path.name)
            position, added_at = added.get(path.name, (-1, ""))  # added by hand: listed first
            found.append((position, VersionInfo(path.name, path, added_at, pointing, validation)))
        return [info for _, info in sorted(found, key=lambda item: (item[0], item[1].version))]

    def history(self) -> list[HistoryEntry]:
        """Every change, oldest first (lines that cannot be read are skipped)."""
        try:
            lines = (self.root / HISTORY_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            try:
                data = json.loads(line)
                entries.append(HistoryEntry(at=str(data["at"]), action=data["action"],
                                            version=data["version"], previous=data["previous"],
                                            by=str(data.get("by", "")), note=str(data.get("note", ""))))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line after a crash: the pointer files are the truth
        return entries

    def current_stack(self) -> list[str]:
        """The versions ``current`` would return to by rolling back, oldest first; its top is ``current``."""
        stack: list[str] = []
        for entry in self.history():
            if entry.action == "promote" and entry.version is not None:
                if not stack or stack[-1] != entry.version:
                    stack.append(entry.version)
            elif entry.action == "rollback" and stack:
                stack.pop()
        return stack

    # ------------------------------------------------------------------ changes
    def add(self, bundle_dir: str | Path, *, note: str = "") -> str:
        """Register the bundle in ``bundle_dir`` (copied in); returns its version.

        Adding a version that is already registered changes nothing.

        Raises:
            BundleError: The directory is not a usable bundle.
        """
        bundle = load_bundle(bundle_dir)
        with self._locked():
            target = self.root / VERSIONS_DIR / bundle.version
            if target.is_dir():
                return bundle.version
            incoming = self.root / VERSIONS_DIR / f".incoming-{uuid.uuid4().hex}"
            try:
                shutil.copytree(bundle.path, incoming)
                # The source may have changed since it was checked: check what was copied.
                self._check_bundle(incoming, bundle.version)
                _sync_tree(incoming)
                os.replace(incoming, target)
            finally:
                shutil.rmtree(incoming, ignore_errors=True)
            _sync_directory(target.parent)
            self._record("add", bundle.version, None, note)
        return bundle.version

    def promote(self, version: str, *, note: str = "") -> str | None:
        """Point ``current`` at ``version``; returns the version it replaced.

        Raises:
            RegistryError: ``version`` is not registered.
            BundleError: Its bundle is damaged (checked before anything changes).
        """
        with self._locked():
            self._check_loadable(version)
            previous = self.pointer("current")
            if previous == version:
                return previous
            self._adopt_current(previous)
            self._set("current", version)
            self._record("promote", version, previous, note)
            if self.pointer("candidate") == version:
                self._clear("candidate")
                self._record("unshadow", None, version, "promoted")
        return previous

    def rollback(self, *, note: str = "") -> str:
        """Point ``current`` back at the version before the latest promotion; returns it.

        Raises:
            RegistryError: There is nothing to roll back to.
        """
        with self._locked():
            previous = self.pointer("current")
            stack = self.current_stack()
            if previous is not None and (not stack or stack[-1] != previous):
                stack.append(previous)  # what _adopt_current records, once the rollback is sure
            if len(stack) < 2:
                raise RegistryError("nothing to roll back to: current has no earlier version in the history")
            version = stack[-2]
            self._check_loadable(version)
            self._adopt_current(previous)
            self._set("current", version)
            self._record("rollback", version, previous, note)
        return version

    def shadow(self, version: str | None, *, note: str = "") -> str | None:
        """Point ``candidate`` at ``version`` (None: no candidate); returns what it replaced.

        Raises:
            RegistryError: ``version`` is not registered.
            BundleError: Its bundle is damaged (checked before anything changes).
        """
        with self._locked():
            previous = self.pointer("candidate")
            if version is None:
                if previous is not None:
                    self._clear("candidate")
                    self._record("unshadow", None, previous, note)
                return previous
            self._check_loadable(version)
            if previous != version:
                self._set("candidate", version)
                self._record("shadow", version, previous, note)
        return previous

    # ---------------------------------------------------------------- internals
    def _check_loadable(self, version: str) -> None:
        self._check_bundle(self.path_of(version), version)

    @staticmethod
    def _check_bundle(path: Path, version: str) -> None:
        """Raise a :class:`BundleError` naming ``version`` unless ``path`` holds that version intact."""
        try:
            bundle = load_bundle(path)
        except BundleError as exc:
            raise BundleError(f"{version}: {exc}") from None
        if bundle.version != version:
            raise BundleError(f"{version}: the directory holds {bundle.version!r}")

    def _adopt_current(self, current: str | None) -> None:
        """Put ``current`` on top of the stack when the history does not have it there.

        That happens when it was set by hand, or when a crash came between a
        pointer swap and its history line: rollback must return to it.
        """
        if current is None:
            return
        stack = self.current_stack()
        if not stack or stack[-1] != current:
            self._record("promote", current, stack[-1] if stack else None, "found as current")

    def _set(self, name: PointerName, version: str) -> None:
        temporary = self.root / f".{name}.{uuid.uuid4().hex}"
        with temporary.open("w", encoding="utf-8") as file:
            file.write(version + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.root / name)
        _sync_directory(self.root)

    def _clear(self, name: PointerName) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / name).unlink()
        _sync_directory(self.root)

    def _record(self, action: Action, version: str | None, previous: str | None, note: str) -> None:
        entry = HistoryEntry(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), action, version, previous,
                             _who(), note)
        path = self.root / HISTORY_FILE
        # After a crash mid-append the file ends in a torn line: appending to it
        # would glue this entry onto the torn one, and both would be skipped.
        separator = "" if _ends_a_line(path) else "\n"
        with path.open("a", encoding="utf-8") as file:
            file.write(separator + json.dumps(entry.to_json(), sort_keys=True) + "\n")
            file.flush()
            os.fsync(file.fileno())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        (self.root / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK_FILE).open("a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _ends_a_line(path: Path) -> bool:
    """Whether ``path`` is missing, empty, or ends with a newline."""
    try:
        with path.open("rb") as file:
            if file.seek(0, os.SEEK_END) == 0:
                return True
            file.seek(-1, os.SEEK_END)
            return file.read(1) == b"\n"
    except FileNotFoundError:
        return True


def _sync_tree(path: Path) -> None:
    """Flush a copied bundle's files to disk before it is renamed into place.

    Without it, a power loss soon after ``add`` could leave a version whose
    name is durable but whose files are empty.
    """
    for file in path.rglob("*"):
        if file.is_file():
            descriptor = os.open(file, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
    _sync_directory(path)


def _sync_directory(path: Path) -> None:
    """Make a rename durable (the directory entry), where the platform allows."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
