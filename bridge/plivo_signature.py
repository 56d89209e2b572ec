"""Plivo's V3 request signature, shared by the XML server (webhooks) and the daemon (the stream's
WebSocket upgrade). Pure of web frameworks: xml_server may import it.

Plivo signs every request with ``X-Plivo-Signature-V3`` and, for a subaccount application
signed with the main account's token, ``X-Plivo-Signature-Ma-V3``; both use the same nonce
header (https://docs.plivo.com/docs/voice/xml/request/validation). Either header matching is
enough: the token configured is whichever account's token the application is signed with.

Plivo's signatures carry no timestamp, so the only defence against a replayed request is to
remember nonces: :class:`NonceStore` keeps them in an SQLite file that every gunicorn worker
(and the daemon) shares, for ``window_s`` seconds, with no entry limit that could make it forget
early.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from plivo.utils import validate_v3_signature

SIGNATURE_HEADER = "X-Plivo-Signature-V3"
MA_SIGNATURE_HEADER = "X-Plivo-Signature-Ma-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"
_PURGE_EVERY = 512


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str = ""


class NonceStore:
    """Nonces seen in the last ``window_s`` seconds, in an SQLite file shared by processes
    (``path`` None: in memory, this process only: tests and development)."""

    def __init__(self, window_s: float, path: str | Path | None = None) -> None:
        self._window = window_s
        self._path = str(path) if path else ":memory:"
        self._local = threading.local()
        self._lock = threading.Lock()  # in-memory: one shared connection
        self._shared: sqlite3.Connection | None = None
        self._inserts = 0
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn()  # create the table now: a bad path fails at start, not on the first call

    def _conn(self) -> sqlite3.Connection:
        if self._path == ":memory:":
            if self._shared is None:
                self._shared = self._open()
            return self._shared
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        # One connection per thread and per process: an SQLite handle must not cross a fork
        # (gunicorn --preload would create the app in the master).
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = self._local.conn = self._open()
            self._local.pid = os.getpid()
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, timeout=5.0, isolation_level=None, check_same_thread=False)
        if self._path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, expires REAL NOT NULL)")
        return conn

    def seen_before(self, nonce: str, now: float | None = None) -> bool:
        """Record ``nonce``; True if it was already recorded and has not expired (a replay)."""
        if self._window <= 0:
            return False
        t = time.time() if now is None else now  # wall clock: shared between processes
        with self._lock:
            conn = self._conn()
            # One statement, atomic across processes: insert, or revive an expired entry.
            cur = conn.execute(
                "INSERT INTO nonces(nonce, expires) VALUES(?, ?) "
                "ON CONFLICT(nonce) DO UPDATE SET expires = excluded.expires "
                "WHERE nonces.expires <= ?",
                (nonce, t + self._window, t),
            )
            fresh = cur.rowcount == 1
            self._inserts += 1
            if self._inserts % _PURGE_EVERY == 0:
                conn.execute("DELETE FROM nonces WHERE expires <= ?", (t,))
        return not fresh


def verify(
    method: str,
    urls: Iterable[str],
    header: Callable[[str], str | None],
    auth_token: str,
    params: dict[str, list[str]] | None,
    nonces: NonceStore | None,
) -> Verdict:
    """Check a request's V3 (or Ma-V3) signature (``header`` looks a request header up) against
    any of the URLs it may have been signed for, then its nonce (after the signature, so a
    forger cannot burn a real nonce)."""
    signatures = [header(SIGNATURE_HEADER) or "", header(MA_SIGNATURE_HEADER) or ""]
    nonce = header(NONCE_HEADER) or ""
    if not any(signatures) or not nonce:
        return Verdict(False, "missing signature headers")
    method = method.upper()
    if method not in ("GET", "POST"):
        return Verdict(False, f"method {method} not signed by Plivo")
    valid = False
    for url in dict.fromkeys(urls):
        for signature in filter(None, signatures):
            try:
                valid = validate_v3_signature(method, url, nonce, auth_token, signature, params)
            except Exception:  # the SDK's argument validators raise on odd URLs/values
                valid = False
            if valid:
                break
        if valid:
            break
    if not valid:
        return Verdict(False, "signature mismatch")
    if nonces is not None and nonces.seen_before(nonce):
        return Verdict(False, "replayed nonce")
    return Verdict(True)
