"""A one-way network path with latency and jitter, for the simulated Plivo stream: each message
is delivered ``base + U(0, jitter)`` after it was sent, in order (the stream is one TCP
connection), with a seeded generator so a test run is repeatable."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NetworkProfile:
    min_ms: float = 40.0  # the path's base delay is drawn once per call from [min_ms, max_ms]
    max_ms: float = 150.0
    jitter_ms: float = 20.0  # then each message adds U(0, jitter_ms)
    seed: int = 1

    @staticmethod
    def none() -> NetworkProfile:
        return NetworkProfile(0.0, 0.0, 0.0)

    @property
    def is_none(self) -> bool:
        """No delay at all: a message goes out as it is sent."""
        return self.max_ms <= 0.0 and self.jitter_ms <= 0.0


class DelayedPipe:
    """Delivers items to ``deliver`` in order, each no sooner than its send time + delay."""

    def __init__(self, profile: NetworkProfile, deliver: Callable[[str], Awaitable[None]],
                 rng: random.Random) -> None:
        self._rng = rng
        self._base = rng.uniform(profile.min_ms, profile.max_ms) / 1000
        self._jitter = profile.jitter_ms / 1000
        self._deliver = deliver
        self._queue: asyncio.Queue[tuple[float, str] | None] = asyncio.Queue()
        self._last_due = 0.0
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._pump())

    @property
    def base_ms(self) -> float:
        return self._base * 1000

    def put(self, item: str) -> None:
        delay = self._base + (self._rng.uniform(0, self._jitter) if self._jitter else 0.0)
        due = max(self._last_due, self._loop.time() + delay)  # TCP: no reordering
        self._last_due = due
        self._queue.put_nowait((due, item))

    def close(self) -> None:
        """Deliver what is in flight, then stop."""
        self._queue.put_nowait(None)

    async def wait_closed(self) -> None:
        await self._task

    def cancel(self) -> None:
        self._task.cancel()

    @property
    def done(self) -> bool:
        return self._task.done()

    async def _pump(self) -> None:
        while True:
            entry = await self._queue.get()
            if entry is None:
                return
            due, item = entry
            delay = due - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._deliver(item)
