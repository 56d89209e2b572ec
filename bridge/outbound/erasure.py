"""`forget`: erase everything stored about one person (DPDPA right to erasure).

Found by the person's keyed pseudonymous subject id (bridge.pseudonym) and by their number:

* transcripts (conversation.transcripts_dir): the first line names the subject; inbound and
  outbound calls alike, and any transcript a campaign row points to;
* recordings (media.recordings_dir): the ``.subject`` sidecar beside each ``.wav``;
* outbound.sqlite: consent, campaign rows (and the duplicate-line records naming them), audit
  rows (subject); the opt-out is kept unless asked, because erasing it would make us call
  someone who asked us not to.

Not touched: the NDNC/DND registry (the regulator's list, re-imported from scrub files) and
result CSVs written outside the data directory (masked numbers only). Erasure is idempotent:
a second run finds nothing and reports zeros. SQLite runs with secure_delete and the WAL is
checkpointed, so erased values do not linger in free pages.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from bridge.media.recording import SUBJECT_SUFFIX
from bridge.outbound.db import transaction
from bridge.outbound.wiring import Outbound
from bridge.privacy import mask_number

log = logging.getLogger(__name__)


@dataclass
class ErasureReport:
    consent: int = 0
    campaign_rows: int = 0
    audit_rows: int = 0
    transcripts: int = 0
    recordings: int = 0
    optout_removed: bool = False
    optout_kept: bool = False

    @property
    def files(self) -> int:
        return self.transcripts + self.recordings

    def describe(self) -> str:
        return (f"consent={self.consent} campaign_rows={self.campaign_rows} audit_rows={self.audit_rows} "
                f"transcripts={self.transcripts} recordings={self.recordings}")


def _transcript_subject(path: Path) -> str:
    """The subject named on a transcript's first line ("" when absent or unreadable)."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = json.loads(fh.readline() or "{}")
    except (OSError, ValueError):
        return ""
    return str(first.get("subject", "")) if isinstance(first, dict) else ""


def _remove(path: Path) -> bool:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        return True
    return False


def find_transcripts(folder: Path, subject: str) -> list[Path]:
    if not subject or not folder.is_dir():
        return []
    return [p for p in sorted(folder.glob("*.jsonl")) if _transcript_subject(p) == subject]


def find_recordings(folder: Path, subject: str) -> list[Path]:
    """The sidecars naming ``subject`` (the .wav is beside each)."""
    if not subject or not folder.is_dir():
        return []
    found = []
    for sidecar in sorted(folder.glob(f"*{SUBJECT_SUFFIX}")):
        with contextlib.suppress(OSError):
            if sidecar.read_text(encoding="ascii").strip() == subject:
                found.append(sidecar)
    return found


def forget(outbound: Outbound, e164: str, include_optout: bool = False) -> ErasureReport:
    report = ErasureReport()
    store = outbound.store
    settings = outbound.settings
    subject = store.subject(e164)
    campaign_files = [Path(p) for p in outbound.campaigns.transcripts_of(e164)]
    with transaction(store.conn) as conn:
        report.consent = int(store.revoke_consent(e164))
        report.campaign_rows = outbound.campaigns.forget(e164)
        cur = conn.execute("DELETE FROM audit WHERE subject=?", (subject,))
        report.audit_rows = cur.rowcount
        if include_optout:
            report.optout_removed = store.remove_optout(e164)
        else:
            report.optout_kept = store.is_opted_out(e164)
    transcripts = set(campaign_files)
    if settings.conversation.transcripts_dir:
        transcripts.update(find_transcripts(Path(settings.conversation.transcripts_dir), subject))
    report.transcripts = sum(_remove(p) for p in sorted(transcripts))
    if settings.media.recordings_dir:
        for sidecar in find_recordings(Path(settings.media.recordings_dir), subject):
            wav = sidecar.with_suffix(".wav")
            removed = _remove(wav)
            _remove(sidecar)  # last: a crash in between leaves the sidecar to find again
            report.recordings += int(removed)
    # WAL pages may still hold the erased values until a checkpoint.
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    log.info("forget %s: %s", mask_number(e164), report.describe(),
             extra={"optout_kept": report.optout_kept, "optout_removed": report.optout_removed})
    return report

