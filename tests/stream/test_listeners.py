"""The stream port's listener count from sock_diag (the fast path) equals the one read from
/proc/net/tcp{,6} (the reference), on real sockets of this network namespace."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator

import pytest

from bridge.stream import listeners
from bridge.stream.listeners import _diag_listeners, count_listeners, proc_listeners


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
