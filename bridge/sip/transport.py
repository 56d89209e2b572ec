"""SIP over UDP and TCP: datagrams and Content-Length framed streams in, bytes out.

A message is handed up with a `Reply` that knows how to answer it on the right path: the
same TCP connection it came on (aiosipua sends TCP responses to the Via address instead),
or UDP from our bound socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass

from bridge.metrics import SIP_DROPPED

log = logging.getLogger(__name__)

MAX_STREAM_MESSAGE = 65_535
_CL = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from and how to answer: transport 'udp' or 'tcp'."""

    transport: str
    addr: tuple[str, int]
    conn: TcpConnection | None = None


Handler = Callable[[bytes, Peer], None]


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
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

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_close(self)


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
            port = proto.transport.get_extra_info("sockname")[1]
        if "tcp" in transports:
            self._tcp_server = await loop.create_server(self._new_conn, host, port, reuse_address=True)
            port = self._tcp_server.sockets[0].getsockname()[1]
        self.port = port

    def _new_conn(self) -> TcpConnection:
        conn = TcpConnection(self._handler, self._conns.discard)
        self._conns.add(conn)
        return conn

    def send(self, data: bytes, peer: Peer, addr: tuple[str, int] | None = None) -> None:
        """Send on the peer's path: its TCP connection, or UDP to `addr` (default its source)."""
        if peer.transport == "tcp":
            if peer.conn is not None:
                peer.conn.send(data)
            return
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.sendto(data, addr or peer.addr)

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
