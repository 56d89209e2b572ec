"""Non-blocking UDP I/O for the media clock: read what has arrived, send without waiting.

The legs' sockets are not registered with the event loop (see bridge.media.media_clock for why);
these helpers never block and never raise for the ordinary UDP failures.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

log = logging.getLogger(__name__)

MAX_DATAGRAM = 2048


def drain(sock: socket.socket, limit: int) -> Iterator[tuple[bytes, tuple[str, int]]]:
    """Datagrams waiting on ``sock``, at most ``limit`` (a flood cannot hog the clock)."""
    for _ in range(limit):
        try:
            data, addr = sock.recvfrom(MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            # ICMP errors surface here on some kernels; the socket itself is fine.
            log.debug("UDP receive error: %s", exc)
            continue
        yield data, addr[:2]


def send(sock: socket.socket, data: bytes, addr: tuple[str, int]) -> bool:
    """Send one datagram; False when the kernel refused it (full buffer, no route)."""
    try:
        sock.sendto(data, addr)
    except OSError as exc:
        log.debug("UDP send to %s failed: %s", addr, exc)
        return False
    return True
