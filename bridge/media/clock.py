"""One 20 ms media clock per event loop, shared by every leg of the process.

A timer task per call (aiortp's paced mode) costs a task wake-up per call every 20 ms; one
clock that walks all legs per tick costs one. Deadlines are absolute, so late wake-ups do not
drift the stream: missed ticks are caught up back to back (a few at most; after a long stall
the clock restarts from now rather than bursting). The clock's task exists only while at
least one leg is registered.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol

log = logging.getLogger(__name__)

TICK_S = 0.020
_MAX_CATCH_UP = 5


class Ticking(Protocol):
    def on_tick(self, now: float) -> None: ...


class MediaClock:
    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = TICK_S) -> None:
        self._loop = loop
        self._interval = interval
        self._members: dict[int, Ticking] = {}
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0
        self.late_ticks = 0
        self.restarts = 0
        self.failures = 0

    def __len__(self) -> int:
        return len(self._members)

    def add(self, member: Ticking) -> None:
        self._members[id(member)] = member
        if self._task is None:
            self._task = self._loop.create_task(self._run(), name="media-clock")

    def remove(self, member: Ticking) -> None:
        self._members.pop(id(member), None)
        if not self._members and self._task is not None:
            task, self._task = self._task, None
            if task is not asyncio.current_task():
                task.cancel()

    async def _run(self) -> None:
        loop = self._loop
        me = asyncio.current_task()
        deadline = loop.time() + self._interval
        # ``self._task is me``: after the last leg left from inside a tick, a new leg may
        # already have started a fresh task; this one must then stop.
        while self._members and self._task is me:
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            behind = int((now - deadline) / self._interval)
            if behind > _MAX_CATCH_UP:
                self.restarts += 1
                deadline = now
                behind = 0
            elif behind > 0:
                self.late_ticks += behind
            for _ in range(behind + 1):
                self._tick(now)
                deadline += self._interval
        if self._task is me:
            self._task = None

    def _tick(self, now: float) -> None:
        self.ticks += 1
        # A copy: a member may leave (hang up) from inside its own tick.
        for member in list(self._members.values()):
            try:
                member.on_tick(now)
            except Exception:
                self.failures += 1
                if self.failures <= 10:  # a bug, not a condition: do not flood the log
                    log.exception("media clock: a leg's tick failed")


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaClock] = weakref.WeakKeyDictionary()


def clock_for_loop(loop: asyncio.AbstractEventLoop | None = None) -> MediaClock:
    """The shared clock of ``loop`` (default: the running loop)."""
    loop = loop or asyncio.get_running_loop()
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = MediaClock(loop)
    return clock
