"""How many sockets listen on one TCP address:port in this network namespace (the kernel's
SO_REUSEPORT group of the stream port), read from /proc/net/tcp and /proc/net/tcp6.

A daemon cannot ask the other daemons sharing its stream port whether they listen, but the
kernel can tell: every listener of the group is a LISTEN line on that address and port. The
stream server leaves the group while it is busy only if another listener stays in it
(``bridge/stream/busy_leave.py``)."""

from __future__ import annotations

import ipaddress
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
