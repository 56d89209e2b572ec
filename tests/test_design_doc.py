"""DESIGN.md is in the repository and the code's pointers to it lead somewhere: every
"DESIGN.md, Section" names a heading, no docstring points to a file the repository lacks, and
every path DESIGN.md and the README's map name exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "DESIGN.md"


def _sources() -> list[Path]:
    return sorted(p for top in ("bridge", "xml_server", "devkit") for p in ROOT.joinpath(top).rglob("*.py"))


def _headings() -> set[str]:
    return {line.lstrip("#").strip() for line in DESIGN.read_text().splitlines() if line.startswith("#")}


def test_every_design_pointer_names_a_section() -> None:
    headings = _headings()
    bad = []
    for path in _sources():
        text = " ".join(path.read_text().split())  # pointers may wrap across lines
        for ref in re.findall(r"DESIGN\.md, ([A-Z][A-Za-z :-]*?)(?=[,.)\"]|$)", text):
            parts = [p.strip() for p in ref.split(":")]
            if not all(p in headings for p in parts):
                bad.append(f"{path.relative_to(ROOT)}: DESIGN.md, {ref}")
        if re.search(r"DESIGN\.md\)", text):
            bad.append(f"{path.relative_to(ROOT)}: 'DESIGN.md' without a section")
    assert not bad, bad


def test_no_docstring_points_to_reference_files_outside_the_repository() -> None:
    bad = [str(p.relative_to(ROOT)) for p in _sources() if re.search(r"reference/[\w-]+\.md", p.read_text())]
    assert not bad, bad


def test_paths_named_in_design_and_the_readme_map_exist() -> None:
    tops = "bridge|xml_server|devkit|tests|config|bench"
    names = set(re.findall(rf"`((?:{tops})/[\w./{{}},-]*)`", DESIGN.read_text()))
    # the map's rows are paths (a slash); other tables' first cells are names (rule ids)
    names |= set(re.findall(r"^\| `([\w.-]*/[\w/.-]*)` \|", (ROOT / "README.md").read_text(), re.M))
    missing = []
    for name in sorted(names):
        brace = re.match(r"(.*)\{(.*)\}(.*)", name)
        options = [name]
        if brace:
            options = [brace.group(1) + o + brace.group(3) for o in brace.group(2).split(",")]
        missing += [o for o in options if not (ROOT / o.rstrip("/")).exists()]
    assert not missing, missing
