"""DPDPA retention: transcripts and recordings older than privacy.retention_days are deleted.

The daemon sweeps at start and then hourly; deleting by file age keeps this independent of
how the conversation and media layers name their files."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from bridge.settings import Settings

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 3600.0
# .subject: a recording's pseudonym sidecar (bridge.media.recording), same age as its .wav
_SUFFIXES = {".jsonl", ".wav", ".subject"}


def retention_dirs(settings: Settings) -> list[Path]:
    dirs = [settings.conversation.transcripts_dir, settings.media.recordings_dir]
    return [Path(d) for d in dirs if d]


def sweep(dirs: list[Path], max_age_s: float, now: float | None = None) -> int:
    """Delete transcript/recording files older than max_age_s; returns how many went."""
    cutoff = (time.time() if now is None else now) - max_age_s
    removed = 0
    for folder in dirs:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            try:
                if path.suffix in _SUFFIXES and path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError as exc:  # a file in use or gone meanwhile: next sweep
                log.warning("retention: cannot delete %s: %s", path.name, exc)
    return removed


async def run_retention(settings: Settings) -> None:
    max_age = settings.privacy.retention_days * 86400.0
    dirs = retention_dirs(settings)
    while True:
        removed = await asyncio.to_thread(sweep, dirs, max_age)
        if removed:
            log.info("retention: deleted %d old transcripts/recordings", removed,
                     extra={"retention_days": settings.privacy.retention_days})
        await asyncio.sleep(SWEEP_EVERY_S)
