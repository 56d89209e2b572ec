"""Campaign state in SQLite (outbound.sqlite): a campaign is a named list of people keyed by
their E.164 number, so re-running it with an edited file only adds the new numbers and nobody
is called twice.

States of a person (``campaign_person.state``)::

    queued -> claimed -> sending -> placed -> answered | busy | no-answer | failed | machine
       ^         |          |          |
       |         |          +----------+--> queued again (retry policy, or provider unreachable)
       +---------+ (crash before the request left)

* ``claimed``: reserved by the one running run (atomic UPDATE ... WHERE state='queued'); the
  request has not left. A crash puts it back to ``queued``.
* ``sending``: committed right before the request leaves. After a crash it *may* have left:
  the run that finds it asks the provider (:meth:`Dialer.find_call`) before dialing again.
* ``placed``: the provider took the call (its id is stored); the outcome comes from the
  provider's callbacks (plivo-api) or from SIP (sip-trunk). A row still ``placed`` after
  ``outbound.outcome_timeout_s`` (callback lost, daemon died mid-call) is looked up at the
  provider by the next run (:meth:`stale_placed`): still live -> left; ended -> its outcome;
  unknown to the provider -> ``unknown`` (never redialed).
* Final: answered, busy, no-answer, failed, machine (outcomes), refused (compliance gate),
  skipped (reached by another campaign within the window), unknown (may have been placed and
  the provider cannot be asked: never redialed).
"""

from __future__ import annotations

import csv
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bridge.outbound.db import transaction
from bridge.outbound.numbers import InvalidNumber, e164_to_int, int_to_e164, normalise
from bridge.privacy import mask_number

_NUMBER_COLUMNS = ("number", "phone", "to", "msisdn", "mobile", "phone_number")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS campaign_list (
    name TEXT PRIMARY KEY, created TEXT NOT NULL, source TEXT NOT NULL DEFAULT '',
    pause_reason TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS campaign_person (
    campaign TEXT NOT NULL REFERENCES campaign_list(name) ON DELETE CASCADE,
    number INTEGER NOT NULL, masked TEXT NOT NULL, line_no INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued', attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0, hint TEXT NOT NULL DEFAULT '', call_id TEXT NOT NULL DEFAULT '',
    sending_at REAL NOT NULL DEFAULT 0, updated_at REAL NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '', duration_s REAL,
    transcript TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (campaign, number));
CREATE INDEX IF NOT EXISTS campaign_person_due ON campaign_person (campaign, state, next_at, line_no);
CREATE INDEX IF NOT EXISTS campaign_person_number ON campaign_person (number, state, updated_at);
CREATE INDEX IF NOT EXISTS campaign_person_hint ON campaign_person (hint);
CREATE TABLE IF NOT EXISTS campaign_line (
    campaign TEXT NOT NULL REFERENCES campaign_list(name) ON DELETE CASCADE,
    line_no INTEGER NOT NULL, number INTEGER, masked TEXT NOT NULL, problem TEXT NOT NULL,
    PRIMARY KEY (campaign, line_no));
"""
OUTCOMES = ("answered", "busy", "no-answer", "failed", "machine")
FINAL_STATES = (*OUTCOMES, "refused", "skipped", "unknown")
IN_FLIGHT = ("claimed", "sending", "placed")
# A person in one of these states in another campaign within the window is not dialed again.
CONTACTED = ("answered", "machine", "refused")


class CampaignFileError(ValueError):
    """The campaign CSV cannot be used; the message says why (line numbers, never numbers)."""


@dataclass(frozen=True)
class CampaignRow:
    campaign_id: str
    e164: str
    line_no: int
    attempts: int  # attempts made before this one
    hint: str = ""  # our call id for this attempt (in the answer/hangup URLs)
    sending_at: float = 0.0
    call_id: str = ""  # the provider's id once placed (stale placed rows)


@dataclass(frozen=True)
class ResultRow:
    line_no: int
    masked: str
    state: str
    outcome: str
    attempts: int
    call_id: str
    duration_s: float | None
    transcript: str
    detail: str


@dataclass
class LoadReport:
    name: str
    created: bool
    added: int = 0  # new people queued by this load
    known: int = 0  # already in the campaign: left as they are
    invalid: int = 0
    duplicate: int = 0
    problems: list[str] = field(default_factory=list)  # "line N: why" (never the number)


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


def campaign_name(path: Path, name: str = "") -> str:
    """The campaign's identity: --name, or the file's stem (editing the file keeps it)."""
    chosen = (name or path.stem).strip()
    if not chosen or len(chosen) > 100 or any(c in chosen for c in "/\\\0"):
        raise CampaignFileError("the campaign name must be 1-100 characters without slashes")
    return chosen


class CampaignStore:
    def __init__(self, conn: sqlite3.Connection, wall: Callable[[], float] = time.time) -> None:
        self.conn = conn
        self.wall = wall  # epoch seconds (tests inject their clock)
        conn.executescript(_SCHEMA)

    # loading ---------------------------------------------------------------------------------
    def load(self, path: Path, region: str, name: str = "") -> LoadReport:
        """Add the file's people to campaign ``name`` (created on first use). People already in
        it keep their state: the edited file of a running campaign adds only the new numbers."""
        campaign = campaign_name(path, name)
        report = LoadReport(campaign, created=False)
        seen: set[int] = set()
        people: list[tuple[int, str, int]] = []
        lines: list[tuple[int, int | None, str, str]] = []
        for line_no, raw in _rows(path):
            try:
                key = e164_to_int(normalise(raw, region))
            except InvalidNumber as exc:
                lines.append((line_no, None, mask_number(raw.strip()), f"number_invalid: {exc}"))
                report.invalid += 1
                report.problems.append(f"line {line_no}: {exc}")
                continue
            if key in seen:
                masked = mask_number(int_to_e164(key))
                lines.append((line_no, key, masked, "duplicate: listed earlier in the file"))
                report.duplicate += 1
                continue
            seen.add(key)
            people.append((key, mask_number(int_to_e164(key)), line_no))
        with transaction(self.conn) as conn:
            if conn.execute("SELECT 1 FROM campaign_list WHERE name=?", (campaign,)).fetchone() is None:
                conn.execute("INSERT INTO campaign_list (name, created, source) VALUES (?, ?, ?)",
                             (campaign, _iso_now(), path.name))
                report.created = True
            for key, masked, line_no in people:
                cur = conn.execute(
                    "INSERT INTO campaign_person (campaign, number, masked, line_no, updated_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (campaign, number) DO NOTHING",
                    (campaign, key, masked, line_no, self.wall()),
                )
                if cur.rowcount:
                    report.added += 1
                else:
                    report.known += 1
            conn.execute("DELETE FROM campaign_line WHERE campaign=?", (campaign,))
            conn.executemany("INSERT INTO campaign_line (campaign, line_no, number, masked, problem)"
                             " VALUES (?, ?, ?, ?, ?)",
                             [(campaign, *line) for line in lines])
        return report

    def exists(self, campaign_id: str) -> bool:
        found = self.conn.execute("SELECT 1 FROM campaign_list WHERE name=?", (campaign_id,)).fetchone()
        return found is not None

    # claiming and recording ------------------------------------------------------------------
    def claim(
        self, campaign_id: str, now: float, hint: str, window_s: float, force: bool
    ) -> CampaignRow | None:
        """Reserve the next due person for this run: one UPDATE that only takes a 'queued' row.
        A person contacted by another campaign within ``window_s`` becomes 'skipped' instead
        (unless ``force``); then the next one is tried."""
        while True:
            with transaction(self.conn) as conn:
                got = conn.execute(
                    "UPDATE campaign_person SET state='claimed', hint=?, updated_at=?"
                    " WHERE campaign=? AND state='queued' AND number=("
                    "  SELECT number FROM campaign_person WHERE campaign=? AND state='queued' AND next_at<=?"
                    "  ORDER BY next_at, line_no LIMIT 1)"
                    " RETURNING number, line_no, attempts",
                    (hint, now, campaign_id, campaign_id, now),
                ).fetchone()
                if got is None:
                    return None
                number, line_no, attempts = got
                other = None if force else conn.execute(
                    "SELECT campaign, state, updated_at FROM campaign_person WHERE number=? AND campaign!=?"
                    f" AND (state IN ({_q(IN_FLIGHT)}) OR (state IN ({_q(CONTACTED)}) AND updated_at>=?))"
                    " ORDER BY updated_at DESC LIMIT 1",
                    (number, campaign_id, *IN_FLIGHT, *CONTACTED, now - window_s),
                ).fetchone()
                if other is None:
                    return CampaignRow(campaign_id, int_to_e164(number), line_no, attempts, hint)
                when = datetime.fromtimestamp(other[2], UTC).isoformat(timespec="minutes")
                conn.execute(
                    "UPDATE campaign_person SET state='skipped', outcome='already_contacted', detail=?,"
                    " updated_at=? WHERE campaign=? AND number=? AND state='claimed'",
                    (f"already contacted by campaign {other[0]!r} ({other[1]}, {when}); --force dials anyway",
                     now, campaign_id, number),
                )

    def mark_sending(self, row: CampaignRow, now: float) -> CampaignRow:
        """Committed before the request leaves: after a crash this row may have been placed."""
        self.conn.execute(
            "UPDATE campaign_person SET state='sending', attempts=attempts+1, sending_at=?, updated_at=?"
            " WHERE campaign=? AND number=? AND state='claimed'",
            (now, now, row.campaign_id, e164_to_int(row.e164)),
        )
        return CampaignRow(row.campaign_id, row.e164, row.line_no, row.attempts, row.hint, now)

    def release(self, row: CampaignRow, next_at: float, detail: str = "") -> None:
        """Back to 'queued' (the request did not leave): the attempt does not count."""
        self.conn.execute(
            "UPDATE campaign_person SET state='queued', next_at=?, detail=?, updated_at=?,"
            " attempts=CASE WHEN state='sending' THEN attempts-1 ELSE attempts END"
            " WHERE campaign=? AND number=? AND state IN ('claimed', 'sending')",
            (next_at, detail, self.wall(), row.campaign_id, e164_to_int(row.e164)),
        )

    def mark_refused(self, row: CampaignRow, rules: list[str], detail: str) -> None:
        self.conn.execute(
            "UPDATE campaign_person SET state='refused', outcome=?, detail=?, updated_at=?"
            " WHERE campaign=? AND number=? AND state='claimed'",
            (",".join(rules), detail, self.wall(), row.campaign_id, e164_to_int(row.e164)),
        )

    def mark_placed(self, row: CampaignRow, call_id: str, detail: str) -> None:
        """The provider took the call; a callback that already wrote the outcome is kept."""
        self.conn.execute(
            "UPDATE campaign_person SET state='placed', call_id=?, detail=?, updated_at=?"
            " WHERE campaign=? AND number=? AND state='sending'",
            (call_id, detail, self.wall(), row.campaign_id, e164_to_int(row.e164)),
        )

    def mark_unknown(self, row: CampaignRow, detail: str) -> None:
        self.conn.execute(
            "UPDATE campaign_person SET state='unknown', outcome='unknown', detail=?, updated_at=?"
            " WHERE campaign=? AND number=? AND state IN ('sending', 'claimed')",
            (detail, self.wall(), row.campaign_id, e164_to_int(row.e164)),
        )

    def mark_placed_unknown(self, row: CampaignRow, detail: str) -> bool:
        """A stale placed call the provider cannot account for: final 'unknown' (it may have
        rung). Only if the row still waits for that same call (a late callback wins)."""
        cur = self.conn.execute(
            "UPDATE campaign_person SET state='unknown', outcome='unknown', detail=?, updated_at=?"
            " WHERE campaign=? AND number=? AND state='placed' AND call_id=?",
            (detail, self.wall(), row.campaign_id, e164_to_int(row.e164), row.call_id),
        )
        return cur.rowcount > 0

    def note_still_live(self, row: CampaignRow, detail: str) -> None:
        """A stale placed call the provider still has: left placed, the check is noted."""
        self.conn.execute(
            "UPDATE campaign_person SET detail=?"
            " WHERE campaign=? AND number=? AND state='placed' AND call_id=?",
            (detail, row.campaign_id, e164_to_int(row.e164), row.call_id),
        )

    def record_outcome(
        self, where: tuple[str, object], outcome: str, *, retry: bool, max_attempts: int, retry_at: float,
        call_id: str = "", detail: str = "", duration_s: float | None = None, transcript: str = "",
        placed_call: str = "",
    ) -> str | None:
        """Write a call's outcome, found by ``where`` = ("hint", value) or ("row", CampaignRow).
        A retryable outcome with attempts left goes back to 'queued' at ``retry_at``. Returns
        the new state (None: no such in-flight row, e.g. a repeated callback). ``placed_call``:
        only a row 'placed' with that provider call id (settling a stale call)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        args: tuple[object, ...]
        if where[0] == "hint":
            cond, args = "hint=?", (where[1],)
        else:
            row = where[1]
            assert isinstance(row, CampaignRow)
            cond, args = "campaign=? AND number=?", (row.campaign_id, e164_to_int(row.e164))
        if placed_call:
            cond, args = cond + " AND state='placed' AND call_id=?", (*args, placed_call)
        with transaction(self.conn) as conn:
            found = conn.execute(
                f"SELECT campaign, number, attempts FROM campaign_person WHERE {cond}"
                " AND state IN ('sending', 'placed')", args,
            ).fetchone()
            if found is None:
                return None
            campaign, number, attempts = found
            state = "queued" if retry and attempts < max_attempts else outcome
            conn.execute(
                "UPDATE campaign_person SET state=?, outcome=?, detail=?, duration_s=?, next_at=?,"
                " updated_at=?,"
                " call_id=CASE WHEN ?!='' THEN ? ELSE call_id END,"
                " transcript=CASE WHEN ?!='' THEN ? ELSE transcript END"
                " WHERE campaign=? AND number=?",
                (state, outcome, detail, duration_s, retry_at if state == "queued" else 0, self.wall(),
                 call_id, call_id, transcript, transcript, campaign, number),
            )
            return state

    # recovery --------------------------------------------------------------------------------
    def interrupted(self, campaign_id: str) -> tuple[int, list[CampaignRow]]:
        """Start of a run (the campaign lock is held): 'claimed' rows never left and are queued
        again (returned count); 'sending' rows may have left and are returned to reconcile."""
        cur = self.conn.execute(
            "UPDATE campaign_person SET state='queued', detail='requeued: the run stopped before dialing'"
            " WHERE campaign=? AND state='claimed'", (campaign_id,),
        )
        rows = self.conn.execute(
            "SELECT number, line_no, attempts, hint, sending_at FROM campaign_person"
            " WHERE campaign=? AND state='sending' ORDER BY line_no", (campaign_id,),
        ).fetchall()
        return cur.rowcount, [
            CampaignRow(campaign_id, int_to_e164(n), ln, a - 1, h, s) for n, ln, a, h, s in rows
        ]

    def stale_placed(self, campaign_id: str, sent_before: float) -> list[CampaignRow]:
        """'placed' rows whose request left before ``sent_before`` and that still have no
        outcome (callback lost, daemon died mid-call): to be looked up at the provider."""
        rows = self.conn.execute(
            "SELECT number, line_no, attempts, hint, sending_at, call_id FROM campaign_person"
            " WHERE campaign=? AND state='placed' AND sending_at<? ORDER BY line_no",
            (campaign_id, sent_before),
        ).fetchall()
        return [CampaignRow(campaign_id, int_to_e164(n), ln, a - 1, h, s, c) for n, ln, a, h, s, c in rows]

    def next_scheduled(self, campaign_id: str) -> float | None:
        row = self.conn.execute(
            "SELECT min(next_at) FROM campaign_person WHERE campaign=? AND state='queued'", (campaign_id,)
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def set_pause_reason(self, campaign_id: str, reason: str) -> None:
        self.conn.execute("UPDATE campaign_list SET pause_reason=? WHERE name=?", (reason, campaign_id))

    def pause_reason(self, campaign_id: str) -> str:
        row = self.conn.execute(
            "SELECT pause_reason FROM campaign_list WHERE name=?", (campaign_id,)
        ).fetchone()
        return "" if row is None else str(row[0])

    # reporting -------------------------------------------------------------------------------
    def counts(self, campaign_id: str) -> dict[str, int]:
        cur = self.conn.execute(
            "SELECT state, count(*) FROM campaign_person WHERE campaign=? GROUP BY state", (campaign_id,)
        )
        out = {state: int(n) for state, n in cur.fetchall()}
        lines = self.conn.execute(
            "SELECT count(*) FROM campaign_line WHERE campaign=?", (campaign_id,)
        ).fetchone()[0]
        if lines:
            out["bad_line"] = int(lines)
        return out

    def results(self, campaign_id: str) -> list[ResultRow]:
        cur = self.conn.execute(
            "SELECT line_no, masked, state, outcome, attempts, call_id, duration_s, transcript, detail"
            " FROM campaign_person WHERE campaign=?"
            " UNION ALL SELECT line_no, masked, 'invalid', problem, 0, '', NULL, '', ''"
            " FROM campaign_line WHERE campaign=? ORDER BY 1",
            (campaign_id, campaign_id),
        )
        return [ResultRow(*r) for r in cur.fetchall()]

    def write_results(self, campaign_id: str, out: Path) -> int:
        """One row per person (and per unusable line); numbers masked (join on `line`)."""
        rows = self.results(campaign_id)
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["line", "number_masked", "state", "outcome", "attempts", "call_id",
                             "duration_s", "transcript_path", "detail"])
            for r in rows:
                duration = "" if r.duration_s is None else f"{r.duration_s:.1f}"
                writer.writerow([r.line_no, r.masked, r.state, r.outcome, r.attempts, r.call_id,
                                 duration, r.transcript, r.detail])
        tmp.replace(out)  # never a half-written results file
        return len(rows)

    # erasure (forget) -------------------------------------------------------------------------
    def transcripts_of(self, e164: str) -> list[str]:
        cur = self.conn.execute(
            "SELECT transcript FROM campaign_person WHERE number=? AND transcript!=''", (e164_to_int(e164),)
        )
        return [r[0] for r in cur.fetchall()]

    def call_ids_of(self, e164: str) -> list[str]:
        cur = self.conn.execute(
            "SELECT call_id FROM campaign_person WHERE number=? AND call_id!='' UNION "
            "SELECT hint FROM campaign_person WHERE number=? AND hint!=''",
            (e164_to_int(e164), e164_to_int(e164)),
        )
        return [r[0] for r in cur.fetchall()]

    def forget(self, e164: str) -> int:
        """Delete the person from every campaign (and the unusable-line records that name them)."""
        key = e164_to_int(e164)
        cur = self.conn.execute("DELETE FROM campaign_person WHERE number=?", (key,))
        erased = cur.rowcount
        self.conn.execute("DELETE FROM campaign_line WHERE number=?", (key,))
        legacy = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='campaign_row'").fetchone()
        if legacy is not None:  # rows of campaigns from before the per-person model
            erased += self.conn.execute("DELETE FROM campaign_row WHERE number=?", (key,)).rowcount
        return erased


def _q(values: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in values)


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
