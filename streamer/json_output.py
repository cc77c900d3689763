"""Result documents written by the commands (``--json PATH``, ``--summary-json PATH``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: Path, document: Any) -> None:
    """Write ``document`` as indented JSON with a final newline, creating parent folders.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     target = Path(folder) / "out" / "r.json"
    ...     write_json(target, {"a": 1})
    ...     target.read_text().splitlines()
    ['{', '  "a": 1', '}']
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
