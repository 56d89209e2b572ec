"""RTP/RTCP port pairs from the configured range: even RTP port, RTCP = port + 1.

The allocator hands out sockets already bound, so "in use" is decided by the kernel (another
process holding a port is skipped) and there is no window between choosing and binding.
Ports are taken round-robin so a port just released is not reused at once: stray packets of
the previous call then cannot land in the next one.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


class PortsExhausted(RuntimeError):
    """No free RTP/RTCP pair is left in the range (the SIP layer answers 503)."""


@dataclass(slots=True)
class PortPair:
    """A bound RTP socket and its RTCP neighbour; the owner closes them and releases the port."""

    port: int
    rtp: socket.socket
    rtcp: socket.socket


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind_udp(host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class PortAllocator:
    """Even RTP ports ``lo <= p`` with ``p + 1 <= hi``; at most one call per pair at a time."""

    def __init__(self, lo: int, hi: int) -> None:
        first = lo + (lo % 2)
        if first + 1 > hi:
            raise ValueError(f"RTP port range {lo}-{hi} holds no even/odd pair")
        self._ports = list(range(first, hi, 2))
        self._next = 0
        self._used: set[int] = set()

    @property
    def capacity(self) -> int:
        return len(self._ports)

    @property
    def in_use(self) -> int:
        return len(self._used)

    def allocate(self, host: str) -> PortPair:
        """Bind the next free pair on ``host``; raises PortsExhausted when none is left."""
        count = len(self._ports)
        for step in range(count):
            port = self._ports[(self._next + step) % count]
            if port in self._used:
                continue
            try:
                rtp = _bind_udp(host, port)
            except OSError:
                continue  # held by someone else
            try:
                rtcp = _bind_udp(host, port + 1)
            except OSError:
                rtp.close()
                continue
            self._used.add(port)
            self._next = (self._next + step + 1) % count
            return PortPair(port, rtp, rtcp)
        raise PortsExhausted(f"no free RTP port pair in {self._ports[0]}-{self._ports[-1] + 1}")

    def release(self, port: int) -> None:
        """Give a pair back (idempotent; the sockets must already be closed)."""
        self._used.discard(port)
