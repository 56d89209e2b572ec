"""The media clock's groups, on an event loop whose time is virtual: the loop never waits, it
jumps its clock to the next timer, and a member "stalls" the loop by moving that clock on. So
every time below is exact and the tests do not depend on the box's load."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import selectors
import socket
from collections.abc import Callable, Iterator

import pytest

from bridge.media.media_clock import _MAX_CATCH_UP, MediaClock

T = 0.020  # the period
G = 4
STEP = T / G


class _JumpingSelector(selectors.EpollSelector):
    """The loop's selector: instead of waiting ``timeout``, moves the virtual clock on by it."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError("the loop would wait forever: nothing is scheduled")
        if timeout > 0:
            self._clock[0] += timeout
        return super().select(0)


# loop clocks the tests start at: the grid's float rounding differs with each
ORIGINS = [1000.0, 0.5, 12345.678]


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, origin: float = 1000.0) -> None:
        self.clock = [origin]
        super().__init__(_JumpingSelector(self.clock))

    def time(self) -> float:
        return self.clock[0]

    def stall(self, seconds: float) -> None:
        """A callback that ran ``seconds`` of CPU."""
        self.clock[0] += seconds


@contextlib.contextmanager
def virtual_loop(origin: float = 1000.0) -> Iterator[VirtualLoop]:
    loop = VirtualLoop(origin)
    try:
        yield loop
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


Event = tuple[float, str, str]  # (loop time, phase, member)


class Member:
    def __init__(self, loop: VirtualLoop, log: list[Event], name: str,
                 sock: socket.socket | None = None) -> None:
        self.loop, self.log, self.name, self.sock = loop, log, name, sock
        self.on_tick_do: Callable[[], None] | None = None  # a one-off action in the next on_tick

    def _note(self, phase: str) -> None:
        self.log.append((round(self.loop.time(), 9), phase, self.name))

    def on_send(self, now: float) -> None:
        self._note("send")

    def on_readable(self, now: float) -> None:
        assert self.sock is not None
        self.sock.recv(2048)
        self._note("read")

    def on_tick(self, now: float) -> None:
        self._note("tick")
        action, self.on_tick_do = self.on_tick_do, None
        if action is not None:
            action()


def _times(log: list[Event], phase: str, name: str) -> list[float]:
    return [t for t, p, n in log if p == phase and n == name]


def _run(loop: VirtualLoop, seconds: float) -> None:
    loop.run_until_complete(asyncio.sleep(seconds))


def _close(clock: MediaClock, members: list[Member]) -> None:
    for m in members:
        clock.remove(m)


def _first(origin: float, k: int) -> float:
    """Group k's first tick for members added at ``origin``: its first slot after it (group
    0's comes a period later, as a lone member's always did)."""
    return origin + (k * STEP if k else T)


@pytest.mark.parametrize("origin", ORIGINS)
def test_members_join_the_least_populated_group_once_every_busy_group_is_full(origin: float) -> None:
    with virtual_loop(origin) as loop:
        log: list[Event] = []
        clock = MediaClock(loop, groups=G, spread_from=3)
        members = [Member(loop, log, f"m{i}") for i in range(30)]
        for m in members[:3]:
            clock.add(m)
        assert clock.group_sizes() == [3, 0, 0, 0]  # few calls: one group, one wake-up a period
        for m in members[3:]:
            clock.add(m)
        assert clock.group_sizes() == [8, 8, 7, 7]
        for member in list(clock._groups[0].members.values()):  # group 0's members leave
            clock.remove(member)
        assert clock.group_sizes() == [0, 8, 7, 7]
        for i in range(9):  # the emptied group fills up first, from the lowest index on
            clock.add(Member(loop, log, f"n{i}"))
        assert clock.group_sizes() == [8, 8, 8, 7]
        for group in clock._groups:
            for member in list(group.members.values()):
                clock.remove(member)
        assert clock._task is None


@pytest.mark.parametrize("origin", ORIGINS)
def test_each_member_ticks_once_a_period_at_its_groups_steady_offset_send_read_tick(origin: float) -> None:
    with virtual_loop(origin) as loop, contextlib.ExitStack() as stack:
        log: list[Event] = []
        clock = MediaClock(loop, groups=G, spread_from=2)
        members = []
        for i in range(8):
            rx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            rx.bind(("127.0.0.1", 0))
            rx.setblocking(False)
            members.append(Member(loop, log, f"m{i}", rx))
            clock.add(members[-1], rx.fileno())
        assert clock.group_sizes() == [2, 2, 2, 2]
        tx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        origin = loop.time()
        periods = 6
        _run(loop, STEP / 2)  # the packets leave between two group ticks, never at one's time
        for _ in range(periods):
            for m in members:
                assert m.sock is not None
                tx.sendto(b"x", m.sock.getsockname())
            _run(loop, T)
        _run(loop, STEP / 4)
        groups = {m.name: k for k, g in enumerate(clock._groups) for m in g.members.values()}  # type: ignore[attr-defined]
        for m in members:
            want = [round(_first(origin, groups[m.name]) + n * T, 9) for n in range(periods)]
            sends = _times(log, "send", m.name)
            assert sends[:periods] == want  # one send a period, always at the group's offset
            assert _times(log, "tick", m.name)[:periods] == want
        # within each group tick: every member of the group sends, then the group's reads,
        # then its ticks; nothing of another group in between
        for t in sorted({t for t, _, _ in log}):
            at = [(p, n) for tt, p, n in log if tt == t]
            names = {n for _, n in at}
            assert len(names) == 2 and {groups[n] for n in names} == {round((t - origin) / STEP) % G}
            phases = [p for p, _ in at]
            assert phases == ["send", "send", "read", "read", "tick", "tick"], at
        assert clock.late_ticks == 0 and clock.restarts == 0
        _close(clock, members)
        assert clock._task is None and all(g.poller is None for g in clock._groups)


@pytest.mark.parametrize("origin", ORIGINS)
def test_one_call_costs_one_wake_up_a_period(origin: float) -> None:
    with virtual_loop(origin) as loop:
        log: list[Event] = []
        clock = MediaClock(loop, groups=G)
        m = Member(loop, log, "m")
        clock.add(m)
        _run(loop, 10 * T + STEP / 2)
        assert clock.ticks == 10 and clock.group_sizes() == [1, 0, 0, 0]
        _close(clock, [m])


@pytest.mark.parametrize("origin", ORIGINS)
def test_after_a_stall_each_group_catches_up_in_a_callback_of_its_own(origin: float) -> None:
    """A message that came during a stall waits for one group's catch-up, not every group's."""
    with virtual_loop(origin) as loop:
        log: list[Event] = []
        clock = MediaClock(loop, groups=G, spread_from=1)
        members = [Member(loop, log, f"g{k}") for k in range(G)]
        for m in members:
            clock.add(m)
        origin = loop.time()

        def stall() -> None:
            loop.stall(3.5 * T)  # past groups 1-3's next ticks and group 0's next three
            loop.call_soon(log.append, (round(loop.time(), 9), "message", "provider"))

        _run(loop, T + STEP / 2)  # every group once (group 0 last, at +20 ms)
        members[0].on_tick_do = stall  # group 0's tick at +40 ms ends at +110
        _run(loop, 10 * T)
        stalled_at = round(origin + 2 * T + 3.5 * T, 9)
        after = [(p, n) for t, p, n in log if t >= stalled_at and p != "send"]
        # group 1 (due at +45 ms, woken at +110): 3 periods behind, 4 ticks; group 2 (+50)
        # also; group 3 (+55): 2 behind, 3 ticks; group 0 (+60): 2 behind, 3 ticks.
        assert after[:1] == [("message", "provider")]  # before any catch-up
        ticks = [n for p, n in after if p == "tick"]
        assert ticks[:14] == ["g1"] * 4 + ["g2"] * 4 + ["g3"] * 3 + ["g0"] * 3
        assert clock.late_ticks == 3 + 3 + 2 + 2 and clock.restarts == 0
        # every catch-up ran at the stall's end; from then on, each group is back on its grid
        assert [_times(log, "tick", f"g{k}").count(stalled_at) for k in range(G)] == [3, 4, 4, 3]
        for k, m in enumerate(members):
            ticks_after = [t for t in _times(log, "tick", m.name) if t > stalled_at]
            assert ticks_after, m.name
            assert round((ticks_after[0] - origin - k * STEP) / T, 6).is_integer()
        _close(clock, members)


@pytest.mark.parametrize("origin", ORIGINS)
def test_a_long_stall_restarts_each_group_on_its_own_grid(origin: float) -> None:
    with virtual_loop(origin) as loop:
        log: list[Event] = []
        clock = MediaClock(loop, groups=G, spread_from=1)
        members = [Member(loop, log, f"g{k}") for k in range(G)]
        for m in members:
            clock.add(m)
        origin = loop.time()
        _run(loop, T + STEP / 2)
        # at +40 ms; it ends between two slots (at a slot, float rounding decides its side)
        members[0].on_tick_do = lambda: loop.stall((_MAX_CATCH_UP + 3) * T + STEP / 2)
        _run(loop, (_MAX_CATCH_UP + 6) * T)
        assert clock.restarts == G and clock.late_ticks == 0
        end = round(origin + 2 * T + (_MAX_CATCH_UP + 3) * T + STEP / 2, 9)
        for k, m in enumerate(members):
            ticks = _times(log, "tick", m.name)
            late = [t for t in ticks if t >= end]
            assert late[0] == end and late[1] > end  # one tick at the stall's end, not a burst
            # then its own offset again, a period apart
            assert round((late[1] - origin - k * STEP) / T, 6).is_integer()
            gaps = [round(b - a, 9) for a, b in itertools.pairwise(late[1:])]
            assert gaps == [T] * (len(late) - 2)
        _close(clock, members)


@pytest.mark.parametrize("origin", ORIGINS)
def test_a_member_added_mid_period_first_ticks_at_its_groups_next_due_time(origin: float) -> None:
    with virtual_loop(origin) as loop:
        log: list[Event] = []
        clock = MediaClock(loop, groups=G, spread_from=1)
        members = [Member(loop, log, f"g{k}") for k in range(3)]
        for m in members:
            clock.add(m)
        origin = loop.time()
        _run(loop, T + 1.4 * STEP)  # +27 ms: between group 1's (+25) and group 2's (+30) ticks
        late = Member(loop, log, "new3")  # the empty group 3: due later in this period
        clock.add(late)
        again = Member(loop, log, "new0")  # every group holds one: group 0, already ticked
        clock.add(again)
        assert clock.group_sizes() == [2, 1, 1, 1]
        _run(loop, 3 * T)
        assert _times(log, "tick", "new3")[:3] == [round(origin + T + 3 * STEP + n * T, 9) for n in range(3)]
        assert _times(log, "tick", "new0")[:3] == [round(origin + 2 * T + n * T, 9) for n in range(3)]
        _close(clock, [*members, late, again])


@pytest.mark.parametrize("origin", ORIGINS)
def test_a_group_opened_while_the_clock_sleeps_is_not_served_late(origin: float) -> None:
    """The clock sleeps toward group 0's next tick; a group opened meanwhile whose slot
    comes sooner starts at its next slot after that wake-up, on time."""
    with virtual_loop(origin) as loop:
        log: list[Event] = []
        clock = MediaClock(loop, groups=G, spread_from=1)
        first = Member(loop, log, "g0")
        clock.add(first)
        origin = loop.time()
        _run(loop, T + STEP / 2)  # group 0 ticked at +20 ms; the clock sleeps until +40
        second = Member(loop, log, "g1")
        clock.add(second)  # group 1's next slot is +25, but the clock sleeps until +40
        _run(loop, 2 * T)
        assert _times(log, "tick", "g1")[0] == round(origin + 2 * T + STEP, 9)
        assert clock.late_ticks == 0
        _close(clock, [first, second])


@pytest.mark.parametrize("origin", ORIGINS)
def test_members_leave_and_join_from_inside_a_groups_tick(origin: float) -> None:
    with virtual_loop(origin) as loop:
        log: list[Event] = []
        clock = MediaClock(loop, groups=G, spread_from=1)
        members = [Member(loop, log, f"g{k}") for k in range(G)]
        for m in members:
            clock.add(m)
        origin = loop.time()
        newcomer = Member(loop, log, "new")

        def churn() -> None:
            clock.remove(members[2])  # not yet ticked this period: not ticked any more
            clock.remove(members[1])  # the member ticking now leaves
            clock.add(newcomer)  # to an emptied group (1): its next slot, next period

        _run(loop, T + STEP / 2)  # every group once; group 1 next at +25 ms, group 2 at +30
        members[1].on_tick_do = churn
        _run(loop, 2 * T)
        assert _times(log, "tick", "g2") == [round(origin + 2 * STEP, 9)]
        assert _times(log, "tick", "g1") == [round(origin + STEP + n * T, 9) for n in range(2)]
        assert _times(log, "tick", "new")[0] == round(origin + 2 * T + STEP, 9)  # not at +25
        assert clock.group_sizes() == [1, 1, 0, 1]
        _close(clock, [members[0], members[3], newcomer])
        assert clock._task is None


@pytest.mark.parametrize("origin", ORIGINS)
def test_the_last_member_leaving_from_its_tick_and_another_joining_keeps_one_task(origin: float) -> None:
    with virtual_loop(origin) as loop:
        log: list[Event] = []
        clock = MediaClock(loop, groups=G, spread_from=1)
        only = Member(loop, log, "only")
        clock.add(only)
        newcomer = Member(loop, log, "new")

        def swap() -> None:
            clock.remove(only)
            clock.add(newcomer)

        only.on_tick_do = swap
        _run(loop, 4 * T)
        assert len(_times(log, "tick", "only")) == 1 and len(_times(log, "tick", "new")) >= 2
        assert [t.get_name() for t in asyncio.all_tasks(loop)].count("media-clock") == 1
        _close(clock, [newcomer])


@pytest.mark.parametrize("origin", ORIGINS)
def test_a_clock_emptied_while_asleep_starts_afresh_on_the_next_add(origin: float) -> None:
    with virtual_loop(origin) as loop:
        log: list[Event] = []
        clock = MediaClock(loop, groups=G, spread_from=1)
        first = Member(loop, log, "first")
        clock.add(first)
        _run(loop, T + STEP / 2)  # ticked at +20 ms; the clock sleeps until +40
        clock.remove(first)
        _run(loop, STEP / 5)
        restart = loop.time()
        members = [Member(loop, log, f"g{k}") for k in range(2)]
        for m in members:
            clock.add(m)
        _run(loop, T + STEP / 2)
        assert _times(log, "tick", "g0") == [round(restart + T, 9)]
        assert _times(log, "tick", "g1") == [round(restart + STEP, 9)]  # not after +40
        assert [t.get_name() for t in asyncio.all_tasks(loop)].count("media-clock") == 1
        _close(clock, members)


@pytest.mark.parametrize("groups", [0, -1])
def test_a_clock_needs_a_group(groups: int) -> None:
    with virtual_loop() as loop, pytest.raises(ValueError):
        MediaClock(loop, groups=groups)


@pytest.mark.parametrize("origin", ORIGINS)
@pytest.mark.parametrize("keep_other", [False, True])
def test_a_member_swapped_in_during_a_catch_up_ticks_once_a_period(origin: float, keep_other: bool) -> None:
    """The only member of group 0 leaves in the first catch-up run after a stall and a new one
    joins: the newcomer starts at its group's next slot and ticks once a period, not in the
    remaining catch-up runs (nor a period late)."""
    with virtual_loop(origin) as loop:
        log: list[Event] = []
        clock = MediaClock(loop, groups=2, spread_from=1)
        only = Member(loop, log, "only")
        clock.add(only)
        other = Member(loop, log, "other")
        if keep_other:
            clock.add(other)  # group 1: the task survives the swap
        newcomer = Member(loop, log, "new")
        start = loop.time()

        def swap() -> None:
            clock.remove(only)
            clock.add(newcomer)

        def stall() -> None:
            loop.stall(3.5 * T)  # from its tick at +40 to +110: group 0 is 3 periods behind
            only.on_tick_do = swap  # in the first catch-up run

        only.on_tick_do = lambda: setattr(only, "on_tick_do", stall)  # stalls at its 2nd tick
        _run(loop, 12 * T)
        ticks = _times(log, "tick", "new")
        assert len(ticks) >= 5
        assert ticks[0] > round(start + 5.5 * T, 9)  # after the swap at +110
        assert [round(b - a, 9) for a, b in itertools.pairwise(ticks)] == [T] * (len(ticks) - 1)
        assert [t.get_name() for t in asyncio.all_tasks(loop)].count("media-clock") == 1
        _close(clock, [newcomer, other])


@pytest.mark.parametrize("origin", ORIGINS)
def test_a_member_joining_an_overdue_group_is_not_ticked_for_the_periods_before_it(origin: float) -> None:
    with virtual_loop(origin) as loop:
        log: list[Event] = []
        clock = MediaClock(loop, groups=2, spread_from=1)
        first, second = Member(loop, log, "g0"), Member(loop, log, "g1")
        clock.add(first)
        clock.add(second)
        newcomer = Member(loop, log, "new")
        start = loop.time()

        def stall() -> None:
            # a SIP/stream callback ready during the stall adds a leg before group 0 (due at
            # +40, +60) catches up at +72; it joins group 0 (both hold one: the lowest index)
            loop.call_soon(clock.add, newcomer)
            loop.stall(2.6 * T)  # not onto a slot: the outcome must not hang on float rounding

        first.on_tick_do = stall  # at +20: the loop runs again at +72
        _run(loop, 6 * T)
        assert clock.group_sizes() == [2, 1]
        at = round(start + 3.6 * T, 9)
        assert _times(log, "tick", "g0")[:4] == [round(start + T, 9), at, at, round(start + 4 * T, 9)]
        assert _times(log, "tick", "g1")[:4] == [round(start + 0.5 * T, 9), at, at, at]
        # the period under way only (+60's run, at +72), then its group's offset
        assert _times(log, "tick", "new")[:3] == [at, round(start + 4 * T, 9), round(start + 5 * T, 9)]
        assert clock.late_ticks == 1 + 2
        _close(clock, [first, second, newcomer])


@pytest.mark.parametrize("busy", [False, True])
def test_an_fd_the_kernel_refuses_leaves_the_clock_as_it_was(busy: bool) -> None:
    with virtual_loop() as loop, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as good:
        log: list[Event] = []
        clock = MediaClock(loop, groups=G, spread_from=4)
        present = Member(loop, log, "present")
        if busy:
            clock.add(present, good.fileno())
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        fd = closed.fileno()
        closed.close()
        member = Member(loop, log, "bad")
        with pytest.raises(OSError):
            clock.add(member, fd)
        assert len(clock) == int(busy) and clock.group_sizes() == [int(busy), 0, 0, 0]
        assert (clock._task is not None) == busy
        assert (clock._groups[0].poller is not None) == busy and list(clock._groups[0].by_fd) == (
            [good.fileno()] if busy else [])
        clock.add(member)  # not taken for a member already: added now
        assert len(clock) == 1 + int(busy) and clock._task is not None
        _close(clock, [present, member])
        assert clock._task is None
