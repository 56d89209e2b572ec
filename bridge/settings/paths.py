"""Files named in the settings (scripts, prompts, corpora) with relative paths."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def resolve_path(path: str | Path) -> Path:
    """A relative path is tried from the working directory, then from the project root, so the
    example config works from any directory."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    root_relative = PROJECT_ROOT / candidate
    return root_relative if root_relative.exists() else candidate
