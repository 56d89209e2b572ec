"""The NDNC/DND registry: numbers from the operator's scrub files, with TRAI preferences.

Keyed by the E.164 digits as an INTEGER PRIMARY KEY (the rowid), so a lookup is one B-tree
descent. ``accepts`` is a bitmask of the commercial categories (1-8) the subscriber still
accepts (TRAI "partially blocked"); 0 means fully blocked.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bridge.outbound.db import REGISTRY_FILE, connect, outbound_dir, transaction
from bridge.outbound.numbers import InvalidNumber, e164_to_int, normalise_fast

_NUMBER_COLUMNS = ("number", "phone", "msisdn", "mobile", "phone_number", "to")
_PREF_COLUMNS = ("allowed_categories", "preferences", "preference", "categories", "category")
_BATCH = 20_000
_SAMPLE_ERRORS = 10


class RegistryFormatError(ValueError):
    """The scrub file cannot be read as a CSV of numbers (the message says where)."""


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    invalid: int = 0
    invalid_lines: list[int] = field(default_factory=list)  # first few line numbers, no content


@dataclass(frozen=True)
class DndEntry:
    accepts: frozenset[int]  # empty = fully blocked

    @property
    def fully_blocked(self) -> bool:
        return not self.accepts

    def blocks(self, category: int) -> bool:
        """True when a promotional call of ``category`` (0 = unspecified) is not wanted."""
        return self.fully_blocked or category == 0 or category not in self.accepts


def parse_preferences(text: str) -> int:
    """"1|3" / "1,3" / "1 3" -> bitmask; "", "0" or "all-blocked" -> 0 (fully blocked)."""
    mask = 0
    for token in re.split(r"[|;, ]+", text.strip()):
        if not token or token == "0":
            continue
        if not token.isdigit() or not 1 <= int(token) <= 8:
            raise ValueError(f"preference category must be 0-8, got {token!r}")
        mask |= 1 << int(token)
    return mask


def _mask_to_set(mask: int) -> frozenset[int]:
    return frozenset(c for c in range(1, 9) if mask & (1 << c))


def _find_column(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def read_scrub_rows(lines: Iterable[str], region: str, report: ImportReport) -> Iterator[tuple[int, int]]:
    """(number key, accepts mask) per valid row; bad rows are counted by line number."""
    reader = csv.reader(lines)
    number_col, pref_col = 0, None
    for line_no, row in enumerate(reader, start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if line_no == 1 and not any(ch.isdigit() for ch in row[0]):
            found = _find_column(row, _NUMBER_COLUMNS)
            if found is None:
                raise RegistryFormatError(
                    f"line 1 is a header without a number column (one of {', '.join(_NUMBER_COLUMNS)})"
                )
            number_col, pref_col = found, _find_column(row, _PREF_COLUMNS)
            continue
        report.rows += 1
        try:
            key = e164_to_int(normalise_fast(row[number_col], region))
            mask = parse_preferences(row[pref_col]) if pref_col is not None and pref_col < len(row) else 0
        except (InvalidNumber, ValueError, IndexError):
            report.invalid += 1
            if len(report.invalid_lines) < _SAMPLE_ERRORS:
                report.invalid_lines.append(line_no)
            continue
        yield key, mask


class DndRegistry:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect(path)
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS dnd (number INTEGER PRIMARY KEY, accepts INTEGER NOT NULL)"
        )

    @classmethod
    def open(cls, data_dir: str | Path) -> DndRegistry:
        return cls(outbound_dir(data_dir) / REGISTRY_FILE)

    def close(self) -> None:
        self._conn.close()

    def lookup(self, e164: str) -> DndEntry | None:
        row = self._conn.execute("SELECT accepts FROM dnd WHERE number=?", (e164_to_int(e164),)).fetchone()
        return None if row is None else DndEntry(_mask_to_set(int(row[0])))

    def count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM dnd").fetchone()[0])

    def import_rows(self, rows: Iterable[tuple[int, int]], replace: bool = False) -> int:
        """Insert in one transaction (readers keep the old list until it commits)."""
        imported = 0
        with transaction(self._conn) as conn:
            if replace:
                conn.execute("DELETE FROM dnd")
            batch: list[tuple[int, int]] = []
            for item in rows:
                batch.append(item)
                if len(batch) >= _BATCH:
                    conn.executemany("INSERT OR REPLACE INTO dnd (number, accepts) VALUES (?, ?)", batch)
                    imported += len(batch)
                    batch.clear()
            if batch:
                conn.executemany("INSERT OR REPLACE INTO dnd (number, accepts) VALUES (?, ?)", batch)
                imported += len(batch)
        return imported

    def import_file(self, path: Path, region: str = "IN", replace: bool = False) -> ImportReport:
        report = ImportReport()
        try:
            with open(path, encoding="utf-8-sig", newline="") as fh:
                report.imported = self.import_rows(read_scrub_rows(fh, region, report), replace=replace)
        except UnicodeDecodeError as exc:
            raise RegistryFormatError(f"not UTF-8 text (byte {exc.start})") from None
        except csv.Error as exc:
            raise RegistryFormatError(f"not a readable CSV: {exc}") from None
        return report

    def import_text(self, text: str, region: str = "IN", replace: bool = False) -> ImportReport:
        report = ImportReport()
        rows = read_scrub_rows(io.StringIO(text), region, report)
        report.imported = self.import_rows(rows, replace=replace)
        return report
