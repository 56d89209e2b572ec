"""How many sockets listen on one TCP address:port in this network namespace (the kernel's
SO_REUSEPORT group of the stream port), read from /proc/net/tcp and /proc/net/tcp6.

A daemon cannot ask the other daemons sharing its stream port whether they listen, but the
kernel can tell: every listener of the group is a LISTEN line on that address and port. The
stream server leaves the group while it is busy only if another listener stays in it
(``bridge/stream/busy_leave.py``)."""

from __future__ import annotations

import ipaddress
import socket
import sys

_LISTEN = "0A"  # TCP_LISTEN in include/net/tcp_states.h
_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def _address(hex_addr: str) -> str:
    """/proc/net/tcp's address: the in-kernel bytes printed as 32-bit words in host order."""
    raw = bytes.fromhex(hex_addr)
    words = [raw[i:i + 4] for i in range(0, len(raw), 4)]
    if sys.byteorder == "little":
        words = [w[::-1] for w in words]
    return str(ipaddress.ip_address(b"".join(words)))


def count_listeners(host: str, port: int, tables: tuple[str, ...] = _TABLES) -> int | None:
    """LISTEN sockets on ``host:port`` (our own included); None when the tables cannot be read
    (not Linux, /proc not mounted): then nobody may assume another listener is there."""
    want = str(ipaddress.ip_address(host))
    found = 0
    read_any = False
    for table in tables:
        try:
            with open(table, encoding="ascii") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        read_any = True
        for line in lines:
            fields = line.split(None, 4)
            if len(fields) < 4 or fields[3] != _LISTEN:
                continue
            addr, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port and _address(addr) == want:
                found += 1
    return found if read_any else None


def try_group_lock(port: int) -> socket.socket | None:
    """A mutex shared by the daemons of one network namespace for the stream port's group: an
    abstract-namespace Unix socket only one process can bind at a time (no file, released when
    closed or when the process dies). None when another daemon holds it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(f"\0voice-bridge-stream-group-{port}")
    except OSError:
        sock.close()
        return None
    return sock


def listening_socket(host: str, port: int, backlog: int = 100) -> socket.socket:
    """A listening socket on ``host:port`` in the port's SO_REUSEPORT group, made synchronously:
    it is in the group (and queues connections) from ``listen()`` on, before the event loop
    serves it. SO_REUSEADDR as asyncio's create_server sets it; backlog as its default."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
