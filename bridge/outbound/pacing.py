"""Calls-per-second cap: placements are spaced at least 1/cps apart on the injected clock."""

from __future__ import annotations

from bridge.outbound.dialer_clock import Clock


class Pacer:
    def __init__(self, calls_per_second: float, clock: Clock) -> None:
        if calls_per_second <= 0:
            raise ValueError("calls_per_second must be positive")
        self.interval = 1.0 / calls_per_second
        self.clock = clock
        self._next: float | None = None

    async def wait(self) -> None:
        """Return when the next placement may start (no burst: Zentrunk counts per second)."""
        now = self.clock.monotonic()
        if self._next is not None and now < self._next:
            await self.clock.sleep(self._next - now)
            now = self.clock.monotonic()
        self._next = max(now, self._next or now) + self.interval
