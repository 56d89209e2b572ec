"""One 20 ms media clock per event loop, shared by every leg of the process.

A timer task per call (aiortp's paced mode) costs a task wake-up per call every 20 ms; one
clock that walks its legs per tick costs one wake-up per group of legs. Deadlines are
absolute, so late wake-ups do not drift the stream: missed ticks are caught up back to back
(a few at most; after a long stall the missed ticks are dropped rather than burst).

Groups. Ticking every leg in one callback made one burst of loop CPU every 20 ms (each leg's
tick also runs its call's per-frame conversation work: ~5-10 ms at 150 calls, ~25 ms for 500
SIP echo calls), and whatever else the loop had to do (a provider's message) waited behind it.
So the members are split into up to ``GROUPS`` groups ticked at evenly spread offsets: group k
is due at ``k * interval / GROUPS`` into each period, and a burst is bounded by the largest
group (groups are not rebalanced: after churn they can be uneven until new calls fill the
small ones). A member joins a group at ``add`` (the least populated one) and keeps it
for its life: its send time keeps a steady offset within the period. A group costs a wake-up
per period whatever its size (an idle loop's wake-up measured ~0.2 ms of CPU on the 2-core
test VM, as much as ~4-5 legs' ticks), so few members share one group: another group is woken
only once every busy group holds ``SPREAD_FROM`` members, a burst of ~1 ms (1-20 calls: one
wake-up per 20 ms, as before).

Receiving works the same way: the legs' RTP sockets are not watched by the event loop (that
is a wake-up and a callback per packet, 10 000 a second for 200 calls). Each group has its own
epoll (level-triggered) of its members' sockets; at the group's tick the clock asks the kernel
once which of them hold packets and lets those legs read one datagram each, repeating for a
few rounds; then every leg of the group ticks. Per group, not one epoll read at every group's
turn: a group's tick reads only its own share of the sockets (the burst stays bounded), and a
leg is read once per period just before its own on_tick, as with one group. Packets wait at
most one period, which the jitter buffer absorbs; a flooded socket is read at most
``_READ_ROUNDS`` packets per period.

Each group tick runs in three phases over the group's legs: send (one packet each), read, then
the receive-side work (jitter buffer, events). Sending first keeps each leg's send time at a
steady offset within its group's tick, whatever the amount of receive work: that is what keeps
the outgoing packet intervals even.

A group's ticks are numbered: its next one is period n of its grid, due at origin + offset +
n * interval, recomputed from the integer (no drift from adding floats, and a member that
leaves and another that joins from inside a tick cannot shift the deadline ``add`` set).

Catch-up is per group: a group woken a whole period or more late runs its missed ticks back to
back (at most ``_MAX_CATCH_UP``; beyond that it drops them and keeps its offset: a restart).
Every group tick is a loop callback of its own, so after a stall the groups catch up one after
the other, with the loop's other ready callbacks between them, not all at once. The metrics
count group ticks (with G groups in use, G a period), whatever the group's size: ``on_time``
run at a wake-up less than a period after their deadline, ``late`` run at a later wake-up (the
missed ticks caught up back to back and that period's own tick, or the one tick of a restart),
``skipped`` dropped by a restart; the lateness histogram has one sample per group wake-up (not
weighted by the group's size). A leg that joins an overdue group takes part from the period
under way on, not in the catch-up of the periods before it joined.

The clock's task exists only while at least one leg is registered, a group's epoll only while
one of its legs has a socket.
"""

from __future__ import annotations

import asyncio
import logging
import math
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
# 2, measured (README, "Media clock groups"): at 150 conversation calls 4 groups cut the
# clock callback's p95 from ~8 to ~2.2 ms of CPU and 2 to ~4.3 ms, but 4 cost the calls 10-20 %
# more CPU (silero's batch then runs once per group, with a quarter of the windows, and its
# fixed cost per run dominates), 2 cost 0-17 % (three A/B pairs at 150 calls: +1, +5, +17 %;
# none at 300).
GROUPS = 2
SPREAD_FROM = 20  # members every busy group holds before another group is woken
_MAX_CATCH_UP = 5
_READ_ROUNDS = 8


class Ticking(Protocol):
    def on_send(self, now: float) -> None:
        """Send this tick's packet (first phase: keep it short and uniform)."""

    def on_readable(self, now: float) -> None:
        """Read one datagram from the member's socket."""

    def on_tick(self, now: float) -> None:
        """The rest of this tick's work."""


class _Group:
    """Members ticked together, at ``offset`` into each period."""

    __slots__ = ("by_fd", "deadline", "index", "joining", "members", "offset", "period", "poller",
                 "sends", "ticks")

    def __init__(self, index: int, offset: float) -> None:
        self.index = index
        self.offset = offset
        self.members: dict[int, Ticking] = {}
        # members that joined while the group was overdue: the first period they take part in
        # (not ticked for the periods before they joined, when the group catches those up)
        self.joining: dict[int, int] = {}
        # the members' bound methods, made once per change of membership, not per tick
        self.sends: list[Callable[[float], None]] = []
        self.ticks: list[Callable[[float], None]] = []
        self.by_fd: dict[int, Callable[[float], None]] = {}
        self.poller: select.epoll | None = None
        # its next tick is period ``period`` of the clock's grid, due at loop time ``deadline``
        # = origin + offset + period * interval (while the clock runs and it has members);
        # always computed from the integer, never advanced by ``+=``: no float drift, and the
        # same period always gives the very same float
        self.period = 0
        self.deadline = 0.0

    def rebuild(self) -> None:
        """New lists (a tick under way keeps walking the ones it took: a member may leave,
        or another join, from inside a tick)."""
        joining = self.joining
        members = [m for key, m in self.members.items() if key not in joining]
        self.sends = [m.on_send for m in members]
        self.ticks = [m.on_tick for m in members]


class MediaClock:
    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = TICK_S,
                 groups: int = GROUPS, spread_from: int = SPREAD_FROM) -> None:
        if groups < 1 or spread_from < 1:
            raise ValueError("a media clock needs at least one group and one member a group")
        self._loop = loop
        self._interval = interval
        self._spread_from = spread_from
        self._groups = [_Group(k, k * interval / groups) for k in range(groups)]
        self._members: dict[int, Ticking] = {}
        self._group_of: dict[int, _Group] = {}
        self._fd_of: dict[int, int] = {}
        self._origin = 0.0  # group k is due at origin + k * interval / groups + n * interval
        self._sleeping_until: float | None = None  # the deadline the task sleeps toward
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0  # group ticks run
        self.late_ticks = 0
        self.restarts = 0
        self.failures = 0

    def __len__(self) -> int:
        return len(self._members)

    def group_sizes(self) -> list[int]:
        return [len(g.members) for g in self._groups]

    def add(self, member: Ticking, fd: int | None = None) -> None:
        """Tick ``member`` every 20 ms, from its group's next due time on; if ``fd`` is given,
        call its on_readable when the fd has data (once per datagram, before on_tick)."""
        key = id(member)
        if key in self._members:
            return
        group = self._choose()
        if fd is not None:  # first: if the kernel refuses the fd, the clock is left as it was
            poller = group.poller if group.poller is not None else select.epoll()
            try:
                poller.register(fd, select.EPOLLIN)
            except BaseException:
                if poller is not group.poller:
                    poller.close()
                raise
            group.poller = poller
            group.by_fd[fd] = member.on_readable
            self._fd_of[key] = fd
        opened = not group.members
        self._members[key] = member
        self._group_of[key] = group
        group.members[key] = member
        if self._task is None:
            # group 0's first tick comes one period from now, every other group's sooner
            self._origin = self._loop.time()
            self._sleeping_until = None  # a cancelled task's, if any
            for g in self._groups:
                self._set_period(g, self._next_period(g))
            self._task = self._loop.create_task(self._run(), name="media-clock")
        elif opened:
            self._set_period(group, self._next_period(group))
        else:
            # an overdue group (the loop is late, or it is catching up now): the newcomer takes
            # part from the period under way, not in the runs for the periods before it joined
            current = self._period_at(group, self._loop.time())
            if current > group.period:
                group.joining[key] = current
        group.rebuild()

    def remove(self, member: Ticking) -> None:
        """Stop ticking ``member`` (call before closing its socket)."""
        key = id(member)
        self._members.pop(key, None)
        group = self._group_of.pop(key, None)
        if group is not None:
            group.members.pop(key, None)
            group.joining.pop(key, None)
            group.rebuild()
            fd = self._fd_of.pop(key, None)
            if fd is not None:
                group.by_fd.pop(fd, None)
                if group.poller is not None:
                    try:
                        group.poller.unregister(fd)
                    except OSError:
                        pass  # already closed
                    if not group.by_fd:
                        group.poller.close()
                        group.poller = None
        if not self._members and self._task is not None:
            task, self._task = self._task, None
            if task is not asyncio.current_task(self._loop):
                task.cancel()

    def _choose(self) -> _Group:
        """The group a new member joins: the least populated busy one while it holds fewer
        than ``spread_from``, else the least populated of all (the lowest index on a tie)."""
        groups = self._groups
        busy = [g for g in groups if g.members]
        if busy:
            least = min(busy, key=lambda g: len(g.members))
            if len(least.members) < self._spread_from:
                return least
        return min(groups, key=lambda g: len(g.members))

    def _slot(self, group: _Group, period: int) -> float:
        return self._origin + group.offset + period * self._interval

    def _set_period(self, group: _Group, period: int) -> None:
        group.period = period
        group.deadline = self._slot(group, period)

    def _period_at(self, group: _Group, when: float) -> int:
        """The last period of ``group``'s grid due at or before ``when`` (by ``_slot``'s own
        floats, so a deadline and this comparison always agree)."""
        n = math.floor((when - self._origin - group.offset) / self._interval)
        while self._slot(group, n + 1) <= when:
            n += 1
        while self._slot(group, n) > when:
            n -= 1
        return n

    def _next_period(self, group: _Group) -> int:
        """A group that had no members: its first slot on its grid strictly after now, and
        after the wake-up the task sleeps toward (it would otherwise be served late, at that
        wake-up)."""
        after = self._loop.time()
        if self._sleeping_until is not None:
            after = max(after, self._sleeping_until)
        return self._period_at(group, after) + 1

    def _due_group(self) -> _Group | None:
        due: _Group | None = None
        for g in self._groups:
            if g.members and (due is None or g.deadline < due.deadline):
                due = g
        return due

    async def _run(self) -> None:
        loop = self._loop
        me = asyncio.current_task()
        # ``self._task is me``: after the last leg left from inside a tick, a new leg may
        # already have started a fresh task; this one must then stop.
        while self._members and self._task is me:
            group = self._due_group()
            if group is None:
                break
            delay = group.deadline - loop.time()
            self._sleeping_until = group.deadline
            # Always through the loop, even when due already: each group tick is a callback
            # of its own, so a stall's catch-up does not run every group in one burst.
            await asyncio.sleep(delay if delay > 0 else 0)
            self._sleeping_until = None
            group = self._due_group()  # members may have come or gone meanwhile
            now = loop.time()
            if group is None or group.deadline > now:
                continue
            MEDIA_CLOCK_LATENESS.observe(now - group.deadline)
            current = self._period_at(group, now)
            behind = current - group.period  # whole periods missed
            runs = self._account(behind)
            if runs <= behind:  # a restart: drop the missed ticks, keep the offset
                self._set_period(group, current)
            for _ in range(runs):
                period = group.period
                if group.joining:
                    self._admit(group, period)
                self._tick_group(group, now)
                if self._task is not me or group.period != period:
                    # a new task took over (the last member left, another joined), or the
                    # group was emptied and re-opened (add() set its next period): not ours
                    break
                self._set_period(group, period + 1)
        if self._task is me:
            self._task = None

    @staticmethod
    def _admit(group: _Group, period: int) -> None:
        """Members that joined an overdue group take part from their first period on."""
        ready = [key for key, first in group.joining.items() if first <= period]
        if ready:
            for key in ready:
                del group.joining[key]
            group.rebuild()

    def _account(self, behind: int) -> int:
        """Count a group's wake-up ``behind`` whole periods after its deadline; how many ticks
        it runs now: its own and the missed ones, or only its own when those are dropped (a
        restart). Its own tick counts as on time only when the wake-up was less than a period
        late; after a late wake-up every tick it runs counts as late."""
        if behind > _MAX_CATCH_UP:
            self.restarts += 1
            _SKIPPED.inc(behind)
            _LATE.inc()
            return 1
        if behind > 0:
            self.late_ticks += behind
            _LATE.inc(behind + 1)
        else:
            _ON_TIME.inc()
        return behind + 1

    def _tick(self, now: float) -> None:
        """Every group once, in order (for code that drives a clock by hand)."""
        for group in self._groups:
            if group.members:
                if group.joining:
                    group.joining.clear()
                    group.rebuild()
                self._tick_group(group, now)

    def _tick_group(self, group: _Group, now: float) -> None:
        self.ticks += 1
        sends, ticks = group.sends, group.ticks  # the members as this tick began (rebuild)
        for send in sends:
            try:
                send(now)
            except Exception:
                self._failed()
        self._read(group, now)
        for tick in ticks:
            try:
                tick(now)
            except Exception:
                self._failed()

    def _read(self, group: _Group, now: float) -> None:
        by_fd = group.by_fd
        for _ in range(_READ_ROUNDS):
            poller = group.poller
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
