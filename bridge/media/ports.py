"""RTP/RTCP port pairs from the configured range: even RTP port, RTCP = port + 1.

The allocator hands out sockets already bound, so "in use" is decided by the kernel (another
process holding a port is skipped) and there is no window between choosing and binding.
Ports are picked at random (a third party cannot guess the next call's port and spray it
before the caller's first packet), and the last few released are not reused while others are
free: stray packets of the previous call then cannot land in the next one.
"""

from __future__ import annotations

import secrets
import socket
from collections import deque
from collections.abc import Iterator
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
        self._used: set[int] = set()
        self._recent: deque[int] = deque(maxlen=max(1, min(64, len(self._ports) // 2)))
        self._rng = secrets.SystemRandom()

    @property
    def capacity(self) -> int:
        return len(self._ports)

    @property
    def in_use(self) -> int:
        return len(self._used)

    def allocate(self, host: str) -> PortPair:
        """Bind a random free pair on ``host``; raises PortsExhausted when none is left."""
        for port in self._candidates():
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
            return PortPair(port, rtp, rtcp)
        raise PortsExhausted(f"no free RTP port pair in {self._ports[0]}-{self._ports[-1] + 1}")

    def _candidates(self) -> Iterator[int]:
        """Free ports in random order: a few random picks (the common case: a mostly idle
        range, no full shuffle per call), then a scan from a random offset, ports released
        lately last."""
        count, used, recent = len(self._ports), self._used, set(self._recent)
        for _ in range(min(count, 16)):
            port = self._ports[self._rng.randrange(count)]
            if port not in used and port not in recent:
                yield port
        start = self._rng.randrange(count)
        ring = [self._ports[(start + i) % count] for i in range(count)]
        yield from (p for p in ring if p not in used and p not in recent)
        yield from (p for p in ring if p not in used and p in recent)

    def release(self, port: int) -> None:
        """Give a pair back (idempotent; the sockets must already be closed)."""
        if port in self._used:
            self._used.discard(port)
            self._recent.append(port)
