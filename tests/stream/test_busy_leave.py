"""A busy daemon steps out of the stream port's SO_REUSEPORT group and rejoins it with room:
two real StreamServers on one 127.0.0.1 port, as two daemons behind one stream URL."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from bridge.admission import Admission
from bridge.callmodel import CallInfo
from bridge.leg import AudioLeg
from bridge.settings import Secrets, Settings
from bridge.simulator.plivo.signing import sign_v3
from bridge.simulator.plivo.stream_client import PlivoStreamClient
from bridge.stream.busy_leave import BusyLeave
from bridge.stream.listeners import count_listeners, try_group_lock
from bridge.stream.server import StreamServer
from bridge.supervisor import CallSupervisor
from tests.stream.support import AUTH_TOKEN, SECRET, headers_for

# --- the rule, alone ------------------------------------------------------------------------


class _Group:
    def __init__(self) -> None:
        self.busy = False
        self.listeners: int | None = 2

    def rule(self, enabled: bool = True, rejoin_after_s: float = 2.0) -> BusyLeave:
        return BusyLeave(enabled, rejoin_after_s, lambda: self.busy, lambda: self.listeners)


def test_leaves_only_while_busy_and_another_listener_stays() -> None:
    g = _Group()
    rule = g.rule()
    assert rule.step(True, 0.0) is None  # room: stays
    g.busy = True
    assert rule.step(True, 1.0) == "leave"
    g.listeners = 1  # only us: a 503 beats a refused connection
    assert rule.step(True, 1.0) is None
    g.listeners = 2  # another came: seen at the next look, not on every 503 (each reads /proc)
    assert rule.step(True, 1.1) is None
    assert rule.step(True, 1.3) == "leave"
    g.listeners = None  # cannot tell (no /proc): stays
    assert rule.step(True, 2.0) is None
    g.listeners = 2
    assert g.rule(enabled=False).step(True, 1.0) is None


def test_rejoins_after_the_hysteresis_or_at_once_when_nobody_listens() -> None:
    g = _Group()
    g.listeners = 1  # the other daemon
    g.busy = True
    rule = g.rule(rejoin_after_s=2.0)
    assert rule.step(False, 0.0) is None  # still busy: stays out
    g.busy = False
    assert rule.step(False, 1.0) is None  # room for 0 s
    assert rule.step(False, 2.5) is None  # room for 1.5 s
    g.busy = True  # busy again: the clock starts over
    assert rule.step(False, 2.6) is None
    g.busy = False
    assert rule.step(False, 3.0) is None
    assert rule.step(False, 5.0) == "join"
    g.busy = True
    g.listeners = 0  # the other left (or died): never leave the URL unanswered
    assert rule.step(False, 5.1) == "join"


def test_count_listeners_sees_every_socket_of_a_reuseport_group() -> None:
    socks = []
    try:
        for _ in range(3):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", socks[0].getsockname()[1] if socks else 0))
            socks.append(s)
        port = socks[0].getsockname()[1]
        assert count_listeners("127.0.0.1", port) == 0  # bound, not listening
        for s in socks:
            s.listen()
        assert count_listeners("127.0.0.1", port) == 3
        assert count_listeners("0.0.0.0", port) == 0  # another address: another group
        socks.pop().close()
        assert count_listeners("127.0.0.1", port) == 2
    finally:
        for s in socks:
            s.close()


# --- two stream servers on one port -----------------------------------------------------------


class _Holder:
    """An agent that holds each call until its socket closes, and names the calls it got."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, leg: AudioLeg, info: CallInfo) -> None:
        self.calls.append(info.call_id)
        await leg.finished()


def _settings(listen: str, rejoin_after_s: float) -> Settings:
    return Settings.model_validate({
        "daemon": {"stream_listen": listen, "stream_rejoin_after_s": rejoin_after_s},
        "plivo": {"nonce_db": ":memory:"},
    })


@contextlib.asynccontextmanager
async def _daemon(agent: _Holder, capacity: int, port: int = 0,
                  rejoin_after_s: float = 0.0) -> AsyncIterator[StreamServer]:
    server = StreamServer(_settings(f"127.0.0.1:{port}", rejoin_after_s),
                          Secrets(stream_secret=SECRET, plivo_auth_token=AUTH_TOKEN),
                          CallSupervisor(agent, Admission(capacity)))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(drain_timeout_s=0.0)


class _Caller:
    """Plivo's side: opens signed streams to the one URL and keeps them open."""

    def __init__(self, port: int, servers: list[StreamServer]) -> None:
        self.port = port
        self.servers = servers
        self.open: dict[str, ClientConnection] = {}
        self.refused = 0
        self._n = 0

    def total(self) -> int:
        return sum(s.active_calls for s in self.servers)

    async def call(self) -> str | None:
        """One stream; its CallUUID once a daemon runs it, None when refused (503)."""
        self._n += 1
        uuid = f"busy-{self._n}"
        address = f"127.0.0.1:{self.port}"
        before = self.total()
        try:
            ws = await connect(f"ws://{address}/stream",
                               additional_headers=sign_v3(AUTH_TOKEN, "GET", f"https://{address}/stream"))
        except InvalidStatus as exc:
            assert exc.response.status_code == 503
            self.refused += 1
            return None
        sim = PlivoStreamClient(f"ws://{address}/stream", call_uuid=uuid, extra_headers=headers_for(uuid))
        await ws.send(sim.start_message())
        for _ in range(500):  # until a daemon runs it (bounded: 10 s)
            if self.total() > before:
                break
            await asyncio.sleep(0.02)
        assert self.total() == before + 1
        self.open[uuid] = ws
        return uuid

    async def hang_up(self, uuid: str) -> None:
        before = self.total()
        await self.open.pop(uuid).close()
        for _ in range(500):
            if self.total() < before:
                return
            await asyncio.sleep(0.02)

    async def close_all(self) -> None:
        for ws in self.open.values():
            await ws.close()


async def _until(cond: Any, what: str) -> None:
    for _ in range(500):  # bounded: 10 s on a loaded machine
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never: {what}")


def _listeners(port: int) -> int:
    return count_listeners("127.0.0.1", port) or 0


async def test_a_busy_daemon_lets_the_other_take_the_streams_and_rejoins_with_room() -> None:
    a_agent, b_agent = _Holder(), _Holder()
    async with _daemon(a_agent, capacity=1) as a:
        port = a.bound_port
        async with _daemon(b_agent, capacity=60, port=port) as b:
            caller = _Caller(port, [a, b])
            try:
                for _ in range(40):  # the kernel hashes each stream to a listener: one reaches a
                    await caller.call()
                    if a.active_calls:
                        break
                assert a.active_calls == 1 and caller.refused == 0
                assert not a.listening and b.listening  # a is full: it left the group at once
                assert _listeners(port) == 1
                on_b = b.active_calls
                for _ in range(12):  # every new stream reaches b: none is refused by full a
                    assert await caller.call() is not None
                    assert _listeners(port) >= 1
                assert caller.refused == 0 and b.active_calls == on_b + 12
                await caller.hang_up(a_agent.calls[0])  # a has room again: it rejoins
                await _until(lambda: a.rejoined == 1, "a rejoined")
                assert _listeners(port) == 2 and a.rejoined == 1
                for _ in range(40):  # and takes streams again
                    await caller.call()
                    if a.active_calls:
                        break
                assert a.active_calls == 1 and caller.refused == 0 and len(a_agent.calls) == 2
            finally:
                await caller.close_all()


async def test_the_last_listener_stays_and_answers_503() -> None:
    a_agent, b_agent = _Holder(), _Holder()
    async with _daemon(a_agent, capacity=1) as a:
        port = a.bound_port
        async with _daemon(b_agent, capacity=1, port=port) as b:
            caller = _Caller(port, [a, b])
            try:
                for _ in range(40):
                    assert await caller.call() is not None
                    assert _listeners(port) >= 1
                    if a.active_calls and b.active_calls:
                        break
                assert a.active_calls == 1 and b.active_calls == 1
                # both full: the first to fill left, the other is the last listener and stays
                assert a.listening != b.listening and _listeners(port) == 1
                for _ in range(3):
                    assert await caller.call() is None  # 503: refused, counted and logged
                    assert _listeners(port) == 1
                full_listener, away = (a, b) if a.listening else (b, a)
                # the one away gets room: it rejoins, and the full one, no longer alone, leaves
                away_agent = b_agent if away is b else a_agent
                await caller.hang_up(away_agent.calls[0])
                await _until(lambda: away.listening and not full_listener.listening, "the roles swapped")
                assert _listeners(port) == 1
                assert await caller.call() is not None  # the room is used: not refused
            finally:
                await caller.close_all()


async def test_a_draining_daemon_does_not_rejoin() -> None:
    a_agent, b_agent = _Holder(), _Holder()
    async with _daemon(a_agent, capacity=1) as a:
        port = a.bound_port
        async with _daemon(b_agent, capacity=60, port=port) as b:
            caller = _Caller(port, [a, b])
            try:
                for _ in range(40):
                    await caller.call()
                    if a.active_calls:
                        break
                assert a.active_calls == 1 and not a.listening
                a.begin_drain()
                await caller.hang_up(a_agent.calls[0])
                for _ in range(8):  # several busy checks (0.25 s each): a stays out
                    await asyncio.sleep(0.25)
                    assert not a.listening
                assert a.rejoined == 0 and _listeners(port) == 1
                for _ in range(10):
                    assert await caller.call() is not None
                assert len(a_agent.calls) == 1 and b.active_calls >= 10
            finally:
                await caller.close_all()


# --- connections queued on a leaving listener ---------------------------------------------------

_MIGRATE = "/proc/sys/net/ipv4/tcp_migrate_req"


@contextlib.contextmanager
def _migrate_req(value: str) -> Any:
    try:
        with open(_MIGRATE) as f:
            old = f.read().strip()
        with open(_MIGRATE, "w") as f:
            f.write(value)
    except OSError as exc:
        pytest.skip(f"cannot set net.ipv4.tcp_migrate_req (Linux >= 5.14, root in the netns): {exc}")
    try:
        yield
    finally:
        with open(_MIGRATE, "w") as f:
            f.write(old)


def _answer(sock: socket.socket) -> bytes:
    """What the daemon answers a request for a wrong path (404), b"" if the connection was reset."""
    try:
        sock.settimeout(10)
        sock.sendall(b"GET /not-the-stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        return sock.recv(64)
    except (ConnectionResetError, BrokenPipeError, TimeoutError):
        return b""
    finally:
        sock.close()


async def _queued_then_leave(migrate: str) -> list[bytes]:
    """40 connections the kernel completes while the daemons' loop does not run (so none is
    accepted yet: each waits in the accept queue of the listener its hash chose), then one
    daemon leaves the group; what each connection is answered."""
    with _migrate_req(migrate):
        async with _daemon(_Holder(), capacity=60) as a:
            port = a.bound_port
            async with _daemon(_Holder(), capacity=60, port=port):
                socks = []
                for _ in range(40):  # blocking connects: the loop does not accept meanwhile
                    s = socket.create_connection(("127.0.0.1", port), timeout=5)
                    socks.append(s)
                a._leave()  # closes its listening socket before the loop accepts anything
                return list(await asyncio.gather(*(asyncio.to_thread(_answer, s) for s in socks)))


async def test_connections_queued_on_a_leaving_listener_move_to_the_other() -> None:
    answers = await _queued_then_leave("1")
    assert all(a.startswith(b"HTTP/1.1 404") for a in answers), answers


async def test_without_tcp_migrate_req_they_are_reset() -> None:
    """The control: the kernel's default resets the connections queued on the leaving socket
    (the hash sends some of 40 there: all on one listener has odds of 2 in 2**40)."""
    answers = await _queued_then_leave("0")
    assert any(a == b"" for a in answers)
    assert any(a.startswith(b"HTTP/1.1 404") for a in answers)


async def test_a_busy_daemon_waits_while_another_holds_the_group_lock() -> None:
    """The count and the close are made under a lock the daemons share (two busy daemons that
    read "2 listeners" in the same instant would both go)."""
    a_agent = _Holder()
    async with _daemon(a_agent, capacity=1) as a:
        port = a.bound_port
        async with _daemon(_Holder(), capacity=60, port=port) as b:
            caller = _Caller(port, [a, b])
            lock = try_group_lock(port)  # another daemon deciding right now
            try:
                assert lock is not None and try_group_lock(port) is None
                for _ in range(40):
                    await caller.call()
                    if a.active_calls:
                        break
                assert a.active_calls == 1 and a.listening and a.left == 0  # waits its turn
                lock.close()
                a.check_busy()
                assert not a.listening and a.left == 1 and _listeners(port) == 1
            finally:
                if lock is not None:
                    lock.close()
                await caller.close_all()


async def test_a_count_read_before_the_other_went_does_not_make_the_last_listener_leave() -> None:
    a_agent = _Holder()
    async with _daemon(a_agent, capacity=1) as a:
        port = a.bound_port
        async with _daemon(_Holder(), capacity=60, port=port) as b:
            caller = _Caller(port, [a, b])
            try:
                b.begin_drain()  # b's listener is gone: every stream goes to a
                assert await caller.call() is not None and a.active_calls == 1
                assert a.listening  # busy but alone: stays
                reads = iter([2])  # a's first read still saw b

                def stale_then_real() -> int | None:
                    return next(reads, None) or count_listeners("127.0.0.1", port)

                a._busy._listeners = stale_then_real
                a._busy._alone_at = None
                a.check_busy()  # read again under the lock: 1, so a stays
                assert a.listening and a.left == 0 and _listeners(port) == 1
                assert await caller.call() is None  # the 503 of the last listener
            finally:
                await caller.close_all()
