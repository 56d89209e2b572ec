"""The stream port's listener count from sock_diag (the fast path) equals the one read from
/proc/net/tcp{,6} (the reference), on real sockets of this network namespace."""

from __future__ import annotations

import contextlib
import ipaddress
import random
import socket
import struct
from collections.abc import Iterator

import pytest

from bridge.stream import listeners
from bridge.stream.listeners import _diag_listeners, _parse_reply, count_listeners, proc_listeners


def _both(host: str, port: int) -> tuple[int, int | None]:
    """(sock_diag's count over both families, /proc's count)."""
    want = str(ipaddress.ip_address(host))
    diag = sum(_diag_listeners(f, port, want) for f in (socket.AF_INET, socket.AF_INET6))
    return diag, proc_listeners(want, port)


@contextlib.contextmanager
def _sockets() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        yield socks
    finally:
        for s in socks:
            s.close()


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_sock_diag_and_proc_agree_on_a_reuseport_group() -> None:
    with _sockets() as socks:
        for _ in range(3):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", socks[0].getsockname()[1] if socks else 0))
            socks.append(s)
        port = socks[0].getsockname()[1]
        assert _both("127.0.0.1", port) == (0, 0)  # bound, not listening
        socks[0].listen()
        assert _both("127.0.0.1", port) == (1, 1)
        for s in socks[1:]:
            s.listen()
        assert _both("127.0.0.1", port) == (3, 3)
        assert _both("0.0.0.0", port) == (0, 0)  # another address: another group
        assert _both("127.0.0.1", port + 1 if port < 65535 else port - 1)[0] == 0
        # a connected socket on the port is no listener
        client = socket.create_connection(("127.0.0.1", port))
        socks.append(client)
        assert _both("127.0.0.1", port) == (3, 3)
        socks.pop(0).close()
        assert _both("127.0.0.1", port) == (2, 2)
        assert count_listeners("127.0.0.1", port) == 2


def test_sock_diag_and_proc_agree_on_wildcard_and_ipv6_listeners() -> None:
    with _sockets() as socks:
        s = socket.socket()
        s.bind(("0.0.0.0", 0))
        s.listen()
        socks.append(s)
        port = s.getsockname()[1]
        assert _both("0.0.0.0", port) == (1, 1)
        assert _both("127.0.0.1", port) == (0, 0)
        if not _ipv6():
            pytest.skip("no IPv6 in this namespace")
        for host in ("::1", "::"):
            s6 = socket.socket(socket.AF_INET6)
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s6.bind((host, 0))
            s6.listen()
            socks.append(s6)
            port6 = s6.getsockname()[1]
            assert _both(host, port6) == (1, 1)
            assert _both("0.0.0.0", port6) == (0, 0)


def test_without_sock_diag_the_count_comes_from_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(family: int, port: int, want: str) -> int:
        raise OSError(2, "no inet_diag")

    monkeypatch.setattr(listeners, "_diag_listeners", refused)
    with _sockets() as socks:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        socks.append(s)
        assert count_listeners("127.0.0.1", s.getsockname()[1]) == 1


def _reply(*messages: tuple[int, bytes]) -> bytes:
    """A sock_diag datagram: (type, payload) messages, each padded to 4 bytes as the kernel does."""
    out = b""
    for kind, payload in messages:
        msg = struct.pack("=IHHII", 16 + len(payload), kind, 2, 1, 0) + payload
        out += msg + bytes(-len(msg) % 4)
    return out


def _diag_msg(port: int, addr: str, state: int = 10) -> bytes:
    """inet_diag_msg: family, state, timer, retrans, sockid (sport, dport, src, dst, if,
    cookie), expires, rqueue, wqueue, uid, inode."""
    src = ipaddress.ip_address(addr).packed.ljust(16, b"\0")
    sockid = struct.pack("!HH", port, 0) + src + bytes(16) + struct.pack("=I", 0) + bytes(8)
    return struct.pack("=BBBB", socket.AF_INET, state, 0, 0) + sockid + struct.pack("=5I", 0, 0, 0, 0, 0)


def test_parser_counts_a_well_formed_reply() -> None:
    good = _reply((20, _diag_msg(5060, "127.0.0.1")), (20, _diag_msg(5060, "127.0.0.2")),
                  (20, _diag_msg(5061, "127.0.0.1")), (20, _diag_msg(5060, "127.0.0.1", state=1)),
                  (20, _diag_msg(5060, "127.0.0.1")))
    assert _parse_reply(good, 5060, "127.0.0.1", 4) == (2, False)
    assert _parse_reply(good + _reply((3, struct.pack("=i", 0))), 5060, "127.0.0.1", 4) == (2, True)


def test_parser_refuses_truncated_or_garbage_replies_as_oserror() -> None:
    """A malformed answer is an OSError (count_listeners then asks /proc), never an
    IndexError or struct.error escaping to the busy check."""
    one = _reply((20, _diag_msg(5060, "127.0.0.1")))
    error = _reply((2, struct.pack("=i", -22) + bytes(16)))
    bad = [
        one[:-10],  # the message says 88 bytes, 78 arrived
        one[:20],  # the header and 4 bytes of the message
        one + one[:9],  # a second header cut short
        error[:18],  # NLMSG_ERROR without its errno
        struct.pack("=IHHII", 16, 2, 0, 1, 0),  # NLMSG_ERROR with no payload
    ]
    for data in bad:
        with pytest.raises(OSError):
            _parse_reply(data, 5060, "127.0.0.1", 4)
    rng = random.Random(3)
    for n in range(3000):  # garbage: a count, the end, or OSError; nothing else
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
        if n % 2:  # mostly believable headers, so the parser gets past the first check
            data = struct.pack("=IHHII", rng.randrange(16, 140), rng.choice((2, 3, 20)), 2, 1, 0) + data
        try:
            _parse_reply(data, 5060, "127.0.0.1", 4)
        except OSError:
            pass


def test_a_parse_error_falls_back_to_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: bytes, port: int, want: str, size: int) -> tuple[int, bool]:
        raise struct.error("unpack_from requires a buffer of at least 20 bytes")

    monkeypatch.setattr(listeners, "_parse_reply", broken)
    with _sockets() as socks:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        socks.append(s)
        assert count_listeners("127.0.0.1", s.getsockname()[1]) == 1


def test_a_silent_kernel_costs_a_short_wait_then_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """A netlink request nobody answers (a sandbox that swallows it; here an NLMSG_NOOP without
    NLM_F_ACK, which the kernel drops silently) blocks the event loop's recv only briefly, then
    /proc counts: the recv's timeout is tens of ms, not a second a busy check."""
    waits: list[float | None] = []

    class Spy(socket.socket):
        def recv(self, size: int, flags: int = 0) -> bytes:
            waits.append(self.gettimeout())
            return super().recv(size, flags)

    noop = struct.pack("=IHHII", 16, 1, 0x1, 1, 0)  # NLMSG_NOOP, NLM_F_REQUEST only
    monkeypatch.setattr(listeners, "_request", lambda family, port: noop)
    monkeypatch.setattr(listeners.socket, "socket", Spy)
    with _sockets() as socks:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        socks.append(s)
        assert count_listeners("127.0.0.1", s.getsockname()[1]) == 1
    assert waits and all(w is not None and 0 < w <= 0.1 for w in waits), waits
