"""A manual time source for the conversation driver (``bridge.conversation.driver_clock.Clock``):
time moves only when a test or bench calls ``advance``, so timing is deterministic."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class ManualClock:
    """Time moves only when a test calls ``advance``; sleepers wake in deadline order."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    def advance(self, seconds: float) -> None:
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now + 1e-9:
            fut = heapq.heappop(self._sleepers)[2]
            if not fut.done():
                fut.set_result(None)
