"""Campaign state in SQLite (outbound.sqlite): one row per number, so a stopped campaign resumes
without calling anyone twice.

A row is marked ``dialing`` (committed) before its dialer is called. A campaign interrupted with
rows in ``dialing`` (a crash mid-placement) marks them ``unknown`` on resume and never redials
them: a second call to the same person is worse than a missed one.
"""

from __future__ import annotations

import csv
import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bridge.outbound.db import transaction
from bridge.outbound.dialer import PlacementResult
from bridge.outbound.numbers import InvalidNumber, e164_to_int, int_to_e164, normalise
from bridge.privacy import mask_number

_NUMBER_COLUMNS = ("number", "phone", "to", "msisdn", "mobile", "phone_number")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS campaign (
    id TEXT PRIMARY KEY, label TEXT NOT NULL, content_hash TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS campaign_row (
    campaign_id TEXT NOT NULL REFERENCES campaign(id) ON DELETE CASCADE,
    row_no INTEGER NOT NULL, number INTEGER, masked TEXT NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '', call_id TEXT NOT NULL DEFAULT '',
    duration_s REAL, transcript TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (campaign_id, row_no));
CREATE INDEX IF NOT EXISTS campaign_row_due ON campaign_row (campaign_id, state, next_at);
CREATE INDEX IF NOT EXISTS campaign_row_number ON campaign_row (number);
"""
# pending -> dialing -> done | pending (retry); refused/invalid/duplicate/unknown are final.
FINAL_STATES = ("done", "refused", "invalid", "duplicate", "unknown")


class CampaignFileError(ValueError):
    """The campaign CSV cannot be used; the message says why (line numbers, never numbers)."""


@dataclass(frozen=True)
class CampaignRow:
    campaign_id: str
    row_no: int
    e164: str
    attempts: int


@dataclass(frozen=True)
class ResultRow:
    row_no: int
    masked: str
    state: str
    outcome: str
    attempts: int
    call_id: str
    duration_s: float | None
    transcript: str
    detail: str


def _rows(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, raw number) from a CSV with a header naming the number column."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise CampaignFileError("the file is empty")
            lowered = [h.strip().lower() for h in header]
            col = next((lowered.index(n) for n in _NUMBER_COLUMNS if n in lowered), None)
            if col is None:
                raise CampaignFileError(f"line 1 must be a header with a number column "
                                        f"(one of {', '.join(_NUMBER_COLUMNS)})")
            for line_no, row in enumerate(reader, start=2):
                if not row or not "".join(row).strip():
                    continue
                yield line_no, row[col] if col < len(row) else ""
    except UnicodeDecodeError as exc:
        raise CampaignFileError(f"not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise CampaignFileError(f"not a readable CSV: {exc}") from None


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


class CampaignStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        conn.executescript(_SCHEMA)

    def load(self, path: Path, region: str, name: str = "") -> tuple[str, bool]:
        """Create the campaign from ``path`` (or find it again: resume). Returns (id, created)."""
        digest = content_hash(path)
        campaign_id = name or f"{path.stem}-{digest[:12]}"
        row = self.conn.execute("SELECT content_hash FROM campaign WHERE id=?", (campaign_id,)).fetchone()
        if row is not None:
            if row[0] != digest:
                raise CampaignFileError(f"campaign {campaign_id!r} exists with a different file; "
                                        "use another --name")
            return campaign_id, False
        seen: set[int] = set()
        records: list[tuple[int, int | None, str, str, str, str]] = []
        for line_no, raw in _rows(path):
            try:
                key = e164_to_int(normalise(raw, region))
            except InvalidNumber as exc:
                masked = mask_number(raw.strip())
                records.append((line_no, None, masked, "invalid", "number_invalid", str(exc)))
                continue
            if key in seen:
                records.append((line_no, None, mask_number(int_to_e164(key)), "duplicate", "duplicate",
                                "number listed earlier in the file"))
                continue
            seen.add(key)
            records.append((line_no, key, mask_number(int_to_e164(key)), "pending", "", ""))
        with transaction(self.conn) as conn:
            conn.execute(
                "INSERT INTO campaign (id, label, content_hash, created) VALUES (?, ?, ?, ?)",
                (campaign_id, path.name, digest, datetime.now(UTC).isoformat(timespec="seconds")),
            )
            conn.executemany(
                "INSERT INTO campaign_row (campaign_id, row_no, number, masked, state, outcome, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(campaign_id, *r) for r in records],
            )
        return campaign_id, True

    def exists(self, campaign_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM campaign WHERE id=?", (campaign_id,)).fetchone() is not None

    def recover_interrupted(self, campaign_id: str) -> int:
        cur = self.conn.execute(
            "UPDATE campaign_row SET state='unknown', outcome='unknown',"
            " detail='interrupted while dialing; not redialed' WHERE campaign_id=? AND state='dialing'",
            (campaign_id,),
        )
        return cur.rowcount

    def next_due(self, campaign_id: str, now_epoch: float) -> CampaignRow | None:
        row = self.conn.execute(
            "SELECT row_no, number, attempts FROM campaign_row WHERE campaign_id=? AND state='pending'"
            " AND next_at<=? ORDER BY next_at, row_no LIMIT 1",
            (campaign_id, now_epoch),
        ).fetchone()
        return None if row is None else CampaignRow(campaign_id, row[0], int_to_e164(row[1]), row[2])

    def next_scheduled(self, campaign_id: str) -> float | None:
        row = self.conn.execute(
            "SELECT min(next_at) FROM campaign_row WHERE campaign_id=? AND state='pending'", (campaign_id,)
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def mark_dialing(self, row: CampaignRow) -> None:
        self.conn.execute(
            "UPDATE campaign_row SET state='dialing', attempts=attempts+1 WHERE campaign_id=? AND row_no=?",
            (row.campaign_id, row.row_no),
        )

    def mark_refused(self, row: CampaignRow, rules: list[str], detail: str) -> None:
        self.conn.execute(
            "UPDATE campaign_row SET state='refused', outcome=?, detail=? WHERE campaign_id=? AND row_no=?",
            (",".join(rules), detail, row.campaign_id, row.row_no),
        )

    def record(self, row: CampaignRow, result: PlacementResult, max_attempts: int, retry_at: float) -> str:
        """Store a placement's result; schedule a retry for busy/no-answer. Returns the new state."""
        attempts = row.attempts + 1
        state = "pending" if result.retryable and attempts < max_attempts else "done"
        self.conn.execute(
            "UPDATE campaign_row SET state=?, outcome=?, detail=?, call_id=?, duration_s=?, transcript=?,"
            " next_at=? WHERE campaign_id=? AND row_no=?",
            (state, result.status, result.detail, result.call_id, result.duration_s, result.transcript_path,
             retry_at if state == "pending" else 0, row.campaign_id, row.row_no),
        )
        return state

    def counts(self, campaign_id: str) -> dict[str, int]:
        cur = self.conn.execute(
            "SELECT state, outcome, count(*) FROM campaign_row WHERE campaign_id=? GROUP BY state, outcome",
            (campaign_id,),
        )
        out: dict[str, int] = {}
        for state, outcome, n in cur.fetchall():
            key = f"{state}:{outcome}" if outcome else state
            out[key] = out.get(key, 0) + int(n)
        return out

    def results(self, campaign_id: str) -> list[ResultRow]:
        cur = self.conn.execute(
            "SELECT row_no, masked, state, outcome, attempts, call_id, duration_s, transcript, detail"
            " FROM campaign_row WHERE campaign_id=? ORDER BY row_no",
            (campaign_id,),
        )
        return [ResultRow(*r) for r in cur.fetchall()]

    def write_results(self, campaign_id: str, out: Path) -> int:
        """One row per input line; numbers masked (join on `line` with your own file)."""
        rows = self.results(campaign_id)
        with open(out, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["line", "number_masked", "state", "outcome", "attempts", "call_id",
                             "duration_s", "transcript_path", "detail"])
            for r in rows:
                duration = "" if r.duration_s is None else f"{r.duration_s:.1f}"
                writer.writerow([r.row_no, r.masked, r.state, r.outcome, r.attempts, r.call_id,
                                 duration, r.transcript, r.detail])
        return len(rows)

    # erasure (forget) -------------------------------------------------------------------------
    def transcripts_of(self, e164: str) -> list[str]:
        cur = self.conn.execute(
            "SELECT transcript FROM campaign_row WHERE number=? AND transcript!=''", (e164_to_int(e164),)
        )
        return [r[0] for r in cur.fetchall()]

    def forget(self, e164: str) -> int:
        """Erase the number from every campaign: the row stays (counts) with no number in it."""
        cur = self.conn.execute(
            "UPDATE campaign_row SET number=NULL, masked='[erased]', call_id='', transcript='',"
            " detail='erased',"
            " state=CASE WHEN state IN ('pending', 'dialing') THEN 'refused' ELSE state END,"
            " outcome=CASE WHEN state IN ('pending', 'dialing') THEN 'erased' ELSE outcome END"
            " WHERE number=?",
            (e164_to_int(e164),),
        )
        return cur.rowcount
