"""Stream tokens already used: each admits one stream (bounded memory, expiring entries)."""

from __future__ import annotations

import time


class UsedTokens:
    def __init__(self, keep_s: float, max_entries: int = 100_000) -> None:
        self._keep = keep_s
        self._max = max_entries
        self._seen: dict[str, float] = {}

    def claim(self, token: str, now: float | None = None) -> bool:
        """True the first time ``token`` is seen within ``keep_s``; False for a second use."""
        t = time.monotonic() if now is None else now
        expiry = self._seen.get(token)
        if expiry is not None and expiry > t:
            return False
        if len(self._seen) >= self._max:
            self._seen = {k: v for k, v in self._seen.items() if v > t}
            if len(self._seen) >= self._max:  # all live: forget the oldest rather than fail
                del self._seen[next(iter(self._seen))]
        self._seen[token] = t + self._keep
        return True
