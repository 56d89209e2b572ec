"""SIP over UDP and TCP: datagrams and Content-Length framed streams in, bytes out.

A message is handed up with a `Peer` that knows how to answer it on the right path: the
same TCP connection it came on (aiosipua sends TCP responses to the Via address instead),
or UDP from our bound socket. Requests of ours over TCP whose connection is gone (a proxy
restarted mid-call) get a new connection to the next hop (`connect`), and a message that
cannot be sent is logged and counted, never lost silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections import deque
from collections.abc import Callable

from bridge.metrics import SIP_DROPPED, SIP_SEND_FAILURES
from bridge.sip.peer import Peer

log = logging.getLogger(__name__)

__all__ = ["Peer", "SipTransport", "TcpConnection", "resolve"]

MAX_STREAM_MESSAGE = 65_535
CONNECT_TIMEOUT_S = 5.0
# The UDP socket's receive buffer: asyncio's loop reads one datagram per pass, so a burst of
# INVITEs/ACKs/BYEs (hundreds of calls starting or ending together) waits in the kernel while
# the media clock runs instead of overflowing the default ~208 KiB (~90 datagrams) and being
# retransmitted. Linux caps it at net.core.rmem_max (README: raise it on a busy host).
UDP_RCVBUF_BYTES = 4 * 1024 * 1024
UDP_DRAIN_PER_PASS = 64
_CL = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*$", re.IGNORECASE | re.MULTILINE)


Handler = Callable[[bytes, Peer], None]


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.transport: asyncio.DatagramTransport | None = None
        self._rx: socket.socket | None = None
        # datagrams read ahead of the loop, handled on its next pass in arrival order
        self._backlog: deque[tuple[bytes, tuple[str, int]]] = deque()
        self._flush_due = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # asyncio's loop reads one datagram per pass, uvloop (libuv) up to 32: with hundreds
        # of calls' media on the loop a pass takes most of a 20 ms tick, and that is less than
        # 500 calls starting or ending need (INVITE+ACK, BYE, retransmissions). A dup of the
        # socket lets each pass read what is waiting (bounded).
        with contextlib.suppress(OSError, AttributeError):
            self._rx = transport.get_extra_info("socket").dup()
            self._rx.setblocking(False)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._rx is not None:
            self._rx.close()
            self._rx = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._backlog:
            # Read after some we read ahead (libuv goes on reading after this returns): it
            # waits its turn.
            self._backlog.append((data, addr))
        else:
            self._handle(data, addr)
        rx, transport = self._rx, self.transport
        if rx is not None and transport is not None and not transport.is_closing():
            for _ in range(UDP_DRAIN_PER_PASS - len(self._backlog)):
                try:
                    data, addr = rx.recvfrom(MAX_STREAM_MESSAGE)
                except OSError:  # nothing more (EAGAIN), or an ICMP report: the loop's read takes it
                    break
                self._backlog.append((data, addr))
        if self._backlog and not self._flush_due:
            # Handled on the next pass, in order, after what this message started (an INVITE's
            # answer task): the same order as one datagram per pass, read in one go.
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        backlog = self._backlog
        for _ in range(len(backlog)):
            self._handle(*backlog.popleft())

    def _handle(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return  # CRLF keep-alive (RFC 5626)
        try:
            self._handler(data, Peer("udp", (addr[0], addr[1])))
        except Exception:  # a bug in one message must not take the socket down
            log.exception("SIP handler failed")
            SIP_DROPPED.labels("handler-error").inc()

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)


class TcpConnection(asyncio.Protocol):
    """One SIP TCP connection: splits the byte stream into messages by Content-Length."""

    def __init__(self, handler: Handler, on_close: Callable[[TcpConnection], None]) -> None:
        self._handler = handler
        self._on_close = on_close
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.addr: tuple[str, int] = ("", 0)
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.addr = (peer[0], peer[1]) if peer else ("", 0)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            while self._buf[:2] == b"\r\n":  # keep-alives between messages
                del self._buf[:2]
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_STREAM_MESSAGE:
                    self._abort("header section too large")
                return
            m = _CL.search(bytes(self._buf[:end]))
            length = int(m.group(1)) if m else 0
            total = end + 4 + length
            if total > MAX_STREAM_MESSAGE:
                self._abort("message too large")
                return
            if len(self._buf) < total:
                return
            message = bytes(self._buf[:total])
            del self._buf[:total]
            try:
                self._handler(message, Peer("tcp", self.addr, self))
            except Exception:
                log.exception("SIP handler failed")
                SIP_DROPPED.labels("handler-error").inc()

    def _abort(self, reason: str) -> None:
        SIP_DROPPED.labels("tcp-framing").inc()
        log.info("closing SIP TCP connection: %s", reason, extra={"peer": self.addr[0]})
        if self.transport is not None:
            self.transport.close()

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing() and not self.closed

    def send(self, data: bytes) -> bool:
        if not self.is_open:
            return False
        assert self.transport is not None
        self.transport.write(data)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_close(self)


def _unsent(data: bytes, peer: Peer) -> None:
    first = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    if first.startswith("SIP/"):
        method = "response"
    else:
        method = first.split(" ", 1)[0] if first.split(" ", 1)[0].isalpha() else "other"
    method = method[:12]  # the rest of the line may hold a phone number: never logged
    SIP_SEND_FAILURES.labels(method, peer.transport).inc()
    log.warning("SIP %s not sent: the %s connection is gone", method, peer.transport.upper(),
                extra={"peer": f"{peer.addr[0]}:{peer.addr[1]}"})


async def resolve(host: str, port: int) -> tuple[str, int]:
    """An IP literal as is, else the first address DNS gives for it."""
    try:
        ipaddress.ip_address(host)
        return host, port
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        return str(infos[0][4][0]), port


class SipTransport:
    """The daemon's SIP sockets: one UDP socket and an optional TCP listener on one port."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._udp: _UdpProtocol | None = None
        self._tcp_server: asyncio.Server | None = None
        self._conns: set[TcpConnection] = set()
        self.port = 0

    async def start(self, host: str, port: int, transports: list[str]) -> None:
        loop = asyncio.get_running_loop()
        if "udp" in transports:
            _, proto = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self._handler), local_addr=(host, port)
            )
            self._udp = proto
            assert proto.transport is not None
            with contextlib.suppress(OSError):
                proto.transport.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF_BYTES)
            port = proto.transport.get_extra_info("sockname")[1]
        if "tcp" in transports:
            self._tcp_server = await loop.create_server(self._new_conn, host, port, reuse_address=True)
            port = self._tcp_server.sockets[0].getsockname()[1]
        self.port = port

    def _new_conn(self) -> TcpConnection:
        conn = TcpConnection(self._handler, self._conns.discard)
        self._conns.add(conn)
        return conn

    async def connect(self, addr: tuple[str, int]) -> TcpConnection:
        """A TCP connection to `addr` (a next hop): an open one we already have, else a new
        one, read like an accepted one. Raises OSError (or TimeoutError) when it cannot be
        opened."""
        for conn in self._conns:
            if conn.addr == addr and conn.is_open:
                return conn
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(self._new_conn, addr[0], addr[1]), CONNECT_TIMEOUT_S)
        log.info("opened a SIP TCP connection", extra={"peer": f"{addr[0]}:{addr[1]}"})
        return conn

    def send(self, data: bytes, peer: Peer, addr: tuple[str, int] | None = None) -> bool:
        """Send on the peer's path: its TCP connection, or UDP to `addr` (default its source).
        False (logged and counted) when it could not go out: the TCP connection is gone."""
        if peer.transport == "tcp":
            if peer.conn is not None and peer.conn.send(data):
                return True
            _unsent(data, peer)
            return False
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.sendto(data, addr or peer.addr)
            return True
        _unsent(data, peer)
        return False

    async def stop(self) -> None:
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
            for conn in list(self._conns):
                if conn.transport is not None:
                    conn.transport.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp_server.wait_closed(), 2.0)
