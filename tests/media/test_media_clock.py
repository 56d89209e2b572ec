"""The shared media clock: phases per tick, readiness, lifecycle of its task and epoll."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

from bridge.media.media_clock import _MAX_CATCH_UP, MediaClock, clock_for_loop
from bridge.metrics import REGISTRY


class Member:
    def __init__(self, log: list[str], name: str, sock: socket.socket | None = None) -> None:
        self.log, self.name, self.sock = log, name, sock
        self.read: list[bytes] = []

    def on_send(self, now: float) -> None:
        self.log.append(f"send {self.name}")

    def on_readable(self, now: float) -> None:
        assert self.sock is not None
        self.read.append(self.sock.recv(2048))
        self.log.append(f"read {self.name}")

    def on_tick(self, now: float) -> None:
        self.log.append(f"tick {self.name}")

@contextlib.contextmanager
def _udp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A non-blocking receiving socket on loopback and a socket to send to it; both closed."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        yield rx, tx
    finally:
        rx.close()
        tx.close()


async def test_every_member_sends_before_anything_is_read_or_ticked() -> None:
    clock = MediaClock(asyncio.get_running_loop())
    log: list[str] = []
    with _udp_pair() as (rx, tx):
        a, b = Member(log, "a", rx), Member(log, "b")
        clock.add(a, rx.fileno())
        clock.add(b)
        for i in range(3):
            tx.sendto(bytes([i]), rx.getsockname())
        await asyncio.sleep(0.01)
        clock._tick(0.0)  # one tick, driven by hand
        assert log == ["send a", "send b", "read a", "read a", "read a", "tick a", "tick b"]
        assert a.read == [b"\x00", b"\x01", b"\x02"]
        clock.remove(a)
        clock.remove(b)


async def test_a_flooded_socket_is_read_a_bounded_number_of_times_per_tick() -> None:
    clock = MediaClock(asyncio.get_running_loop())
    log: list[str] = []
    with _udp_pair() as (rx, tx):
        m = Member(log, "m", rx)
        clock.add(m, rx.fileno())
        for _ in range(30):
            tx.sendto(b"x", rx.getsockname())
        await asyncio.sleep(0.01)
        clock._tick(0.0)
        first = len(m.read)
        clock._tick(0.02)
        assert 0 < first < 30 and len(m.read) == min(30, 2 * first)
        clock.remove(m)


async def test_the_task_and_poller_live_only_while_members_do() -> None:
    clock = clock_for_loop()
    assert clock is clock_for_loop()
    log: list[str] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    m = Member(log, "m", sock)
    clock.add(m, sock.fileno())
    assert clock._task is not None and clock._groups[0].poller is not None
    await asyncio.sleep(0.07)
    assert log.count("tick m") >= 2
    clock.remove(m)
    assert clock._task is None and all(g.poller is None for g in clock._groups)
    await asyncio.sleep(0)
    assert len(clock) == 0
    sock.close()


async def test_a_member_that_fails_does_not_stop_the_others() -> None:
    clock = MediaClock(asyncio.get_running_loop())
    log: list[str] = []

    class Broken(Member):
        def on_tick(self, now: float) -> None:
            raise RuntimeError("bug")

    clock.add(Broken(log, "x"))
    ok = Member(log, "ok")
    clock.add(ok)
    clock._tick(0.0)
    clock._tick(0.02)
    assert log.count("tick ok") == 2 and clock.failures == 2
    clock.remove(ok)
    for member in list(clock._members.values()):
        clock.remove(member)


async def test_a_member_leaving_from_inside_its_tick_and_another_joining() -> None:
    clock = clock_for_loop()
    log: list[str] = []
    joined: list[Member] = []

    class Leaver(Member):
        def on_tick(self, now: float) -> None:
            super().on_tick(now)
            clock.remove(self)
            newcomer = Member(log, "new")
            joined.append(newcomer)
            clock.add(newcomer)  # the last member left and a new one came: one task only

    clock.add(Leaver(log, "l"))
    await asyncio.sleep(0.1)
    assert log.count("tick l") == 1 and log.count("tick new") >= 2
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "media-clock"]
    assert len(tasks) == 1
    clock.remove(joined[0])
    await asyncio.sleep(0)


def _ticks(kind: str) -> float:
    return REGISTRY.get_sample_value("voice_bridge_media_clock_ticks_total", {"kind": kind}) or 0.0


async def test_late_wake_ups_are_caught_up_and_counted_and_a_long_stall_restarts() -> None:
    clock = MediaClock(asyncio.get_running_loop())
    before = {kind: _ticks(kind) for kind in ("on_time", "late", "skipped")}
    assert clock._account(0) == 1  # a group's wake-up runs its own tick
    assert clock._account(3) == 4  # and three more back to back to catch up
    assert clock._account(_MAX_CATCH_UP + 1) == 1  # dropped: the group restarts on its grid
    assert (clock.late_ticks, clock.restarts) == (3, 1)
    assert _ticks("on_time") - before["on_time"] == 1  # only the wake-up less than a period late
    assert _ticks("late") - before["late"] == 4 + 1  # every tick of a late wake-up, a restart's one
    assert _ticks("skipped") - before["skipped"] == _MAX_CATCH_UP + 1
