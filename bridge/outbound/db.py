"""SQLite files under the settings' data dir (daemon.data_dir): one connection helper for all."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REGISTRY_FILE = "dnd-registry.sqlite"  # the operator's NDNC/DND scrub data (large, re-imported)
OUTBOUND_FILE = "outbound.sqlite"  # consent, opt-outs, audit, campaigns (personal data: forget)


def outbound_dir(data_dir: str | Path) -> Path:
    path = Path(data_dir) / "outbound"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: explicit BEGIN/COMMIT, so a batch is one transaction.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    # Erased rows are overwritten, not left in free pages (forget must really forget).
    conn.execute("PRAGMA secure_delete=ON")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (the write lock is taken at
    once, so two writers never both read before either writes)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
