"""The README's configuration table documents config.yaml: every key, no other key, the same defaults.

A row may name several keys (``kafka.input_topic`` / ``alert_topic``, or
``a``, ``b``, ``c``); keys after the first may leave out the first one's
section. Its default cell then holds one value for all of them (``null``) or
one value each, separated the same way.
"""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Configuration"
HEADER = "| key | default | meaning |"


def table_rows(readme: str) -> list[tuple[str, str]]:
    """The (key cell, default cell) of every row of the configuration table."""
    section = readme.split(f"\n{SECTION}\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = lines.index(HEADER) + 2  # past the header and the |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = line.split("|")  # the meaning cell may hold a |, only the first two matter
        rows.append((cells[1].strip(), cells[2].strip()))
    return rows


def split_values(cell: str) -> list[str]:
    """A cell split at the ``,`` and ``/`` outside backticks and brackets.

    >>> split_values("`readings` / `readings-dlq`"), split_values("1, `[a, b]`, null")
    (['`readings`', '`readings-dlq`'], ['1', '`[a, b]`', 'null'])
    """
    values, current, quoted, depth = [], "", False, 0
    for char in cell:
        if char == "`":
            quoted = not quoted
        elif not quoted and char == "[":
            depth += 1
        elif not quoted and char == "]":
            depth -= 1
        elif not quoted and depth == 0 and char in ",/":
            values.append(current.strip())
            current = ""
            continue
        current += char
    values.append(current.strip())
    return values


def parse_value(text: str) -> Any:
    """A default as written in the table, normalised: ``null``, booleans, numbers as float, lists.

    >>> parse_value("`[value]`"), parse_value("1e-6"), parse_value("2"), parse_value("`0.0.0.0`")
    (['value'], 1e-06, 2.0, '0.0.0.0')
    """
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "`":
        text = text[1:-1]
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [parse_value(item) for item in split_values(inner)] if inner else []
    if text == "null":
        return None
    if text in ("true", "false"):
        return text == "true"
    try:
        return float(text)
    except ValueError:
        return text


def normalised(value: Any) -> Any:
    """A config.yaml value in :func:`parse_value`'s terms (numbers as float)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [normalised(item) for item in value]
    raise TypeError(f"unexpected config value {value!r}")


def documented_defaults(rows: list[tuple[str, str]], sections: set[str]) -> dict[str, Any]:
    """Every key the table names, with its default normalised (rows with several keys expanded).

    Raises:
        ValueError: A row whose default cell has neither one value nor one per key.
    """
    documented: dict[str, Any] = {}
    for key_cell, default_cell in rows:
        names = re.findall(r"`([^`]+)`", key_cell)
        parent = names[0].rpartition(".")[0]
        keys = [names[0]] + [name if name.split(".")[0] in sections else f"{parent}.{name}"
                             for name in names[1:]]
        values = split_values(default_cell) if len(keys) > 1 else [default_cell]
        if len(values) == 1:
            values *= len(keys)
        if len(values) != len(keys):
            raise ValueError(f"row {key_cell!r}: {len(keys)} keys but defaults {default_cell!r}")
        for key, value in zip(keys, values, strict=True):
            if key in documented:
                raise ValueError(f"{key} is documented twice")
            documented[key] = parse_value(value)
    return documented


def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key paths of a nested mapping and their values."""
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(leaves(value, f"{path}."))
        else:
            flat[path] = value
    return flat


@pytest.fixture(scope="module")
def config_yaml() -> dict[str, Any]:
    return leaves(yaml.safe_load((REPO_ROOT / "config.yaml").read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def readme_table(config_yaml: dict[str, Any]) -> dict[str, Any]:
    sections = {key.split(".")[0] for key in config_yaml}
    return documented_defaults(table_rows((REPO_ROOT / "README.md").read_text(encoding="utf-8")), sections)


def test_rows_with_several_keys_expand_to_one_entry_per_key() -> None:
    readme = "\n".join([
        "# x", SECTION, "", HEADER, "|---|---|---|",
        "| `k.input_topic` / `alert_topic` / `dead_letter_topic` | `readings` / `alerts` / `dlq` | |",
        "| `s.a`, `b`, `c` | 1, 2, 3 | counts, `|z|` |",
        "| `s.sub.user`, `password` | null | secrets |",
        "| `s.channels` | `[value]` | |",
        "", "## Next", "| `not.a` | row | |",
    ])
    documented = documented_defaults(table_rows(readme), {"k", "s"})
    assert documented == {
        "k.input_topic": "readings", "k.alert_topic": "alerts", "k.dead_letter_topic": "dlq",
        "s.a": 1.0, "s.b": 2.0, "s.c": 3.0, "s.sub.user": None, "s.sub.password": None,
        "s.channels": ["value"],
    }
    with pytest.raises(ValueError, match="2 keys"):
        documented_defaults([("`s.a`, `b`", "1, 2, 3")], {"s"})


def test_every_config_yaml_key_is_in_the_readme_table(config_yaml: dict[str, Any],
                                                      readme_table: dict[str, Any]) -> None:
    missing = sorted(set(config_yaml) - set(readme_table))
    assert not missing, f"config.yaml keys missing from the README table: {missing}"


def test_every_readme_table_key_is_in_config_yaml(config_yaml: dict[str, Any],
                                                  readme_table: dict[str, Any]) -> None:
    unknown = sorted(set(readme_table) - set(config_yaml))
    assert not unknown, f"README table keys config.yaml does not have: {unknown}"


def test_readme_table_defaults_equal_config_yaml(config_yaml: dict[str, Any],
                                                 readme_table: dict[str, Any]) -> None:
    wrong = {key: {"README": documented, "config.yaml": config_yaml[key]}
             for key, documented in readme_table.items()
             if key in config_yaml and documented != normalised(config_yaml[key])}
    assert not wrong, f"README table defaults that differ from config.yaml: {wrong}"
