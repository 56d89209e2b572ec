"""`forget`: erase what the outbound side stores about one person (DPDPA right to erasure).

Erased: consent records, the number in every campaign row (and transcript files those rows
point to), and the person's audit rows (found by their keyed hash). Kept unless asked: an
opt-out entry, because erasing it would make us call someone who asked us not to. The
NDNC/DND registry is the regulator's list, re-imported from scrub files, and is not touched.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from bridge.outbound.db import transaction
from bridge.outbound.wiring import Outbound


@dataclass
class ErasureReport:
    consent: int = 0
    campaign_rows: int = 0
    audit_rows: int = 0
    files: int = 0
    optout_removed: bool = False
    optout_kept: bool = False


def forget(outbound: Outbound, e164: str, include_optout: bool = False) -> ErasureReport:
    report = ErasureReport()
    store = outbound.store
    paths = outbound.campaigns.transcripts_of(e164)
    with transaction(store.conn) as conn:
        report.consent = int(store.revoke_consent(e164))
        report.campaign_rows = outbound.campaigns.forget(e164)
        cur = conn.execute("DELETE FROM audit WHERE subject=?", (store.subject(e164),))
        report.audit_rows = cur.rowcount
        if include_optout:
            report.optout_removed = store.remove_optout(e164)
        else:
            report.optout_kept = store.is_opted_out(e164)
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
            report.files += 1
    # WAL pages may still hold the erased values until a checkpoint.
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return report
