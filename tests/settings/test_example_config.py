"""config/voice-bridge.example.toml documents every key of the schema and loads cleanly."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from bridge.settings import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "voice-bridge.example.toml"


def _keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """(table, key) for every leaf field; nested sections become [a.b] tables."""
    out: list[tuple[str, str]] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        if getattr(ann, "__origin__", None) is dict and issubclass(args[1], BaseModel):
            out += _keys(args[1], f"{prefix}{name}.NAME.")  # [agents.NAME]: one table per profile
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _keys(ann, f"{prefix}{name}.")
        else:
            out.append((prefix.rstrip("."), name))
    return out


def _documented(text: str) -> set[tuple[str, str]]:
    """Keys set or shown commented-out ("# key = ...") under each [table] header."""
    found: set[tuple[str, str]] = set()
    table = ""
    for line in text.splitlines():
        header = re.match(r"^\s*#?\s*\[\[?([A-Za-z0-9_.]+)\]\]?\s*$", line)
        if header:
            table = header.group(1)
            continue
        key = re.match(r"^\s*#?\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        if key:
            found.add((table, key.group(1)))
    return found


def test_every_schema_key_is_in_the_example() -> None:
    documented = _documented(EXAMPLE.read_text())
    missing = [f"[{t}] {k}" for t, k in _keys(Settings) if (t, k) not in documented]
    assert not missing, "keys missing from the example config: " + ", ".join(missing)


def test_example_config_validates() -> None:
    load_settings(EXAMPLE, environ={})


def test_every_key_line_has_a_comment_above_or_beside() -> None:
    lines = EXAMPLE.read_text().splitlines()
    bare = []
    for i, line in enumerate(lines):
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*\s*=", line) and "#" not in line:
            above = lines[i - 1].strip() if i else ""
            if not above.startswith("#"):
                bare.append(line)
    assert not bare, f"uncommented keys: {bare}"
