"""One capacity for the whole daemon: SIP calls and Plivo stream calls admit against the same
``sip.max_calls`` (before, each path counted its own calls: twice the configured load).

A path asks ``refusal()`` when a call knocks (cheap, nothing held), ``take()`` when the call
gets resources, and ``release()`` exactly once when it is over.
"""

from __future__ import annotations

from collections.abc import Callable


class Admission:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.active = 0
        self.draining = False
        # set by the daemon to its LoadMonitor's: True while new calls are shed (loop running late)
        self.overloaded: Callable[[], bool] = lambda: False

    def refusal(self) -> str:
        """'' when a call may come in, else why not (for the 503 / the log)."""
        if self.draining:
            return "draining"
        if self.active >= self.capacity:
            return "at capacity"
        if self.overloaded():
            return "overloaded"
        return ""

    def take(self) -> bool:
        if self.refusal():
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active = max(0, self.active - 1)
