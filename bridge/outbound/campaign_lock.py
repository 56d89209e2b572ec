"""One run per campaign: an exclusive flock on a per-campaign file. The kernel drops the lock
when the process ends, however it ends (kill -9 included), so a crashed run never leaves it."""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from types import TracebackType


class CampaignBusy(RuntimeError):
    """Another run of the same campaign holds the lock."""


class CampaignLock:
    def __init__(self, directory: Path, campaign: str) -> None:
        # The name is hashed: campaign names are free text, file names are not.
        digest = hashlib.sha256(campaign.encode()).hexdigest()[:24]
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = directory / f"campaign-{digest}.lock"
        self.campaign = campaign
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CampaignBusy(f"campaign {self.campaign!r} is already running in another process "
                               "(one run per campaign; this one dialed nobody)") from None
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> CampaignLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
