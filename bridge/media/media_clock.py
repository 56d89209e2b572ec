"""One 20 ms media clock per event loop, shared by every leg of the process.

A timer task per call (aiortp's paced mode) costs a task wake-up per call every 20 ms; one
clock that walks all legs per tick costs one. Deadlines are absolute, so late wake-ups do not
drift the stream: missed ticks are caught up back to back (a few at most; after a long stall
the clock restarts from now rather than bursting).

Receiving works the same way: the legs' RTP sockets are not watched by the event loop (that
is a wake-up and a callback per packet, 10 000 a second for 200 calls). At each tick the clock
asks the kernel once (epoll, level-triggered) which sockets hold packets and lets those legs
read one datagram each, repeating for a few rounds; then every leg ticks. Packets wait at most
one tick, which the jitter buffer absorbs; a flooded socket is read at most ``_READ_ROUNDS``
packets per tick.

Each tick runs in three phases over all legs: send (one packet each), read, then the
receive-side work (jitter buffer, events). Sending first keeps each leg's send time at a
steady offset within the tick, whatever the amount of receive work: that is what keeps the
outgoing packet intervals even.

The clock's task and epoll object exist only while at least one leg is registered.
"""

from __future__ import annotations

import asyncio
import logging
import select
import weakref
from collections.abc import Callable
from typing import Protocol

from bridge.metrics import MEDIA_CLOCK_LATENESS, MEDIA_CLOCK_TICKS

log = logging.getLogger(__name__)
_ON_TIME = MEDIA_CLOCK_TICKS.labels("on_time")
_LATE = MEDIA_CLOCK_TICKS.labels("late")
_SKIPPED = MEDIA_CLOCK_TICKS.labels("skipped")

TICK_S = 0.020
_MAX_CATCH_UP = 5
_READ_ROUNDS = 8


class Ticking(Protocol):
    def on_send(self, now: float) -> None:
        """Send this tick's packet (first phase: keep it short and uniform)."""

    def on_readable(self, now: float) -> None:
        """Read one datagram from the member's socket."""

    def on_tick(self, now: float) -> None:
        """The rest of this tick's work."""


class MediaClock:
    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = TICK_S) -> None:
        self._loop = loop
        self._interval = interval
        self._members: dict[int, Ticking] = {}
        # the members' bound methods, made once per change of membership, not per tick
        self._phases: tuple[list[Callable[[float], None]], list[Callable[[float], None]]] = ([], [])
        self._by_fd: dict[int, Callable[[float], None]] = {}
        self._fd_of: dict[int, int] = {}
        self._poller: select.epoll | None = None
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0
        self.late_ticks = 0
        self.restarts = 0
        self.failures = 0

    def __len__(self) -> int:
        return len(self._members)

    def add(self, member: Ticking, fd: int | None = None) -> None:
        """Tick ``member`` every 20 ms; if ``fd`` is given, call its on_readable when the fd
        has data (once per datagram, before on_tick)."""
        self._members[id(member)] = member
        self._rebuild()
        if fd is not None:
            if self._poller is None:
                self._poller = select.epoll()
            self._poller.register(fd, select.EPOLLIN)
            self._by_fd[fd] = member.on_readable
            self._fd_of[id(member)] = fd
        if self._task is None:
            self._task = self._loop.create_task(self._run(), name="media-clock")

    def remove(self, member: Ticking) -> None:
        """Stop ticking ``member`` (call before closing its socket)."""
        self._members.pop(id(member), None)
        self._rebuild()
        fd = self._fd_of.pop(id(member), None)
        if fd is not None:
            self._by_fd.pop(fd, None)
            if self._poller is not None:
                try:
                    self._poller.unregister(fd)
                except OSError:
                    pass  # already closed
        if not self._members:
            if self._poller is not None:
                self._poller.close()
                self._poller = None
            if self._task is not None:
                task, self._task = self._task, None
                if task is not asyncio.current_task():
                    task.cancel()

    def _rebuild(self) -> None:
        """New lists (a tick under way keeps walking the ones it took: a member may leave,
        or another join, from inside a tick)."""
        members = self._members.values()
        self._phases = ([m.on_send for m in members], [m.on_tick for m in members])

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
            MEDIA_CLOCK_LATENESS.observe(max(0.0, now - deadline))
            behind = self._account(int((now - deadline) / self._interval))
            if behind < 0:  # too far behind: restart from now
                deadline = now
                behind = 0
            for _ in range(behind + 1):
                self._tick(now)
                deadline += self._interval
        if self._task is me:
            self._task = None

    def _account(self, behind: int) -> int:
        """Count a wake-up ``behind`` ticks after its deadline; -1 when those ticks are
        dropped (a restart) rather than caught up."""
        _ON_TIME.inc()
        if behind > _MAX_CATCH_UP:
            self.restarts += 1
            _SKIPPED.inc(behind)
            return -1
        if behind > 0:
            self.late_ticks += behind
            _LATE.inc(behind)
        return behind

    def _tick(self, now: float) -> None:
        self.ticks += 1
        sends, ticks = self._phases  # the members as this tick began (_rebuild)
        for send in sends:
            try:
                send(now)
            except Exception:
                self._failed()
        self._read(now)
        for tick in ticks:
            try:
                tick(now)
            except Exception:
                self._failed()

    def _read(self, now: float) -> None:
        by_fd = self._by_fd
        for _ in range(_READ_ROUNDS):
            poller = self._poller
            if poller is None:
                return
            ready = poller.poll(0)
            if not ready:
                return
            for fd, _mask in ready:
                reader = by_fd.get(fd)
                if reader is None:
                    continue
                try:
                    reader(now)
                except Exception:
                    self._failed()

    def _failed(self) -> None:
        self.failures += 1
        if self.failures <= 10:  # a bug, not a condition: do not flood the log
            log.exception("media clock: a leg failed")


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaClock] = weakref.WeakKeyDictionary()


def clock_for_loop(loop: asyncio.AbstractEventLoop | None = None) -> MediaClock:
    """The shared clock of ``loop`` (default: the running loop)."""
    loop = loop or asyncio.get_running_loop()
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = MediaClock(loop)
    return clock
