"""Limits on `POST /calls`: repeated calls to one number, and a lockout for a source that keeps
presenting bad tokens. In memory (one daemon process); time from an injectable monotonic clock."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ApiLimits:
    calls_per_number: int = 3  # requests naming one number ...
    number_window_s: float = 3600.0  # ... within this long
    bad_tokens: int = 10  # bad tokens from one source ...
    lockout_s: float = 600.0  # ... within this long lock it out for this long


class SlidingCounter:
    """At most ``limit`` events per key within ``window_s``."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._events: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        now = self.clock()
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.window_s:
            events.popleft()
        if not events:
            del self._events[key]  # bounded memory: only keys with recent events stay
            return deque()
        return events

    def retry_after(self, key: str) -> float:
        """0 when another event is allowed now, else seconds until it is."""
        events = self._recent(key)
        if len(events) < self.limit:
            return 0.0
        return max(0.0, events[0] + self.window_s - self.clock())

    def add(self, key: str) -> None:
        self._recent(key)
        self._events.setdefault(key, deque()).append(self.clock())
