"""Personal data the outbound side keeps (outbound.sqlite): consent, opt-outs and the audit log.

The audit log never holds a full number: a masked form for people and a keyed hash (HMAC with a
per-install key) so `forget` can find a person's rows without the number being stored.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bridge.metrics import OUTBOUND_DECISIONS
from bridge.outbound.db import OUTBOUND_FILE, connect, outbound_dir
from bridge.outbound.numbers import e164_to_int
from bridge.privacy import mask_number
from bridge.pseudonym import load_key, subject_of

log = logging.getLogger("bridge.outbound.audit")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS consent (
    number INTEGER PRIMARY KEY, purpose TEXT NOT NULL, recorded_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS optout (number INTEGER PRIMARY KEY, recorded_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, ts TEXT NOT NULL, decision TEXT NOT NULL, rules TEXT NOT NULL,
    subject TEXT NOT NULL, masked TEXT NOT NULL, via TEXT NOT NULL, call_id TEXT NOT NULL,
    detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_subject ON audit (subject);
"""


@dataclass(frozen=True)
class AuditRow:
    ts: str
    decision: str  # allowed | refused | placed | failed | ...
    rules: str  # comma-separated rule names (refusals) or ""
    subject: str  # keyed hash of the E.164 number
    masked: str
    via: str
    call_id: str
    detail: str


class OutboundStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._key = load_key(directory.parent)  # data_dir/outbound/pseudonym.key
        self.conn: sqlite3.Connection = connect(directory / OUTBOUND_FILE)
        self.conn.executescript(_SCHEMA)

    @classmethod
    def open(cls, data_dir: str | Path) -> OutboundStore:
        return cls(outbound_dir(data_dir))

    def close(self) -> None:
        self.conn.close()

    def subject(self, number: str) -> str:
        """Pseudonym of a number (E.164, or the raw text when it is not a valid number)."""
        return subject_of(self._key, number)

    # consent and opt-out ------------------------------------------------------------------
    def add_consent(self, e164: str, purpose: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO consent (number, purpose, recorded_at) VALUES (?, ?, ?)",
            (e164_to_int(e164), purpose, _now()),
        )

    def revoke_consent(self, e164: str) -> bool:
        cur = self.conn.execute("DELETE FROM consent WHERE number=?", (e164_to_int(e164),))
        return cur.rowcount > 0

    def has_consent(self, e164: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM consent WHERE number=?", (e164_to_int(e164),)).fetchone()
        return row is not None

    def add_optout(self, e164: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO optout (number, recorded_at) VALUES (?, ?)", (e164_to_int(e164), _now())
        )

    def remove_optout(self, e164: str) -> bool:
        cur = self.conn.execute("DELETE FROM optout WHERE number=?", (e164_to_int(e164),))
        return cur.rowcount > 0

    def is_opted_out(self, e164: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM optout WHERE number=?", (e164_to_int(e164),)).fetchone()
        return row is not None

    # audit --------------------------------------------------------------------------------
    def audit(
        self, number: str, decision: str, rules: list[str], via: str, call_id: str = "", detail: str = ""
    ) -> None:
        masked = mask_number(number)
        row = AuditRow(_now(), decision, ",".join(rules), self.subject(number), masked, via, call_id, detail)
        self.conn.execute(
            "INSERT INTO audit (ts, decision, rules, subject, masked, via, call_id, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row.ts, row.decision, row.rules, row.subject, row.masked, row.via, row.call_id, row.detail),
        )
        for rule in rules or [""]:  # labels never carry numbers (privacy, cardinality)
            OUTBOUND_DECISIONS.labels(via=via, decision=decision, rule=rule).inc()
        log.info(
            "outbound %s to %s via %s%s",
            decision,
            masked,
            via,
            f" ({row.rules})" if row.rules else "",
            extra={"subject": row.subject, "call_id": call_id, "detail": detail},
        )

    def decisions_for_call(self, call_id: str) -> list[AuditRow]:
        """The audit rows of one call id of ours (allowed, then placed/busy/... when it ended)."""
        cur = self.conn.execute(
            "SELECT ts, decision, rules, subject, masked, via, call_id, detail FROM audit"
            " WHERE call_id=? ORDER BY id", (call_id,),
        )
        return [AuditRow(*row) for row in cur.fetchall()]

    def audit_rows(self, number: str | None = None) -> list[AuditRow]:
        if number is None:
            cur = self.conn.execute(
                "SELECT ts, decision, rules, subject, masked, via, call_id, detail FROM audit ORDER BY id"
            )
        else:
            cur = self.conn.execute(
                "SELECT ts, decision, rules, subject, masked, via, call_id, detail FROM audit"
                " WHERE subject=? ORDER BY id",
                (self.subject(number),),
            )
        return [AuditRow(*row) for row in cur.fetchall()]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
