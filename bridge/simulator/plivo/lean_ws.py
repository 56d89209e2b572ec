"""A minimal RFC 6455 WebSocket client, sans-I/O: the upgrade request and its answer, masked
client frames, and server frames cut from a byte buffer. For the lean stream load generator
(stream_load.py), which sends the same media frames thousands of times a second and so masks
their constant parts once instead of per frame."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator, Mapping

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


class HandshakeError(Exception):
    """The server did not switch protocols (its status, e.g. "HTTP 403"), or answered wrongly."""


class Masker:
    """Client-to-server masking (RFC 6455 section 5.3) with one key.

    The key is drawn at random once per process and then used for every frame of every call in
    it. Masking exists so that a script in a browser, which chooses the payload, cannot make the
    bytes on the wire predictable to a proxy that misreads them (cache poisoning, section 10.3);
    only intermediaries need it unpredictable. Here the load generator writes every payload
    itself and talks to the daemon directly, and a server must unmask whatever key it is given.
    A fixed key is what lets the audio payloads be masked once and reused for every call and tick.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or secrets.token_bytes(4)
        self._repeated = self.key * 64

    def mask(self, data: bytes, phase: int = 0) -> bytes:
        """``data`` masked as if it started ``phase`` bytes into a frame's payload (one XOR of
        two big integers: C speed)."""
        n = len(data)
        while len(self._repeated) < n + 4:
            self._repeated += self._repeated
        key = self._repeated[phase % 4 : phase % 4 + n]
        return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")

    def all_phases(self, data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        """``data`` masked for each of the four offsets (mod 4) it may start at in a frame."""
        return (self.mask(data, 0), self.mask(data, 1), self.mask(data, 2), self.mask(data, 3))

    def frame(self, opcode: int, payload: bytes) -> bytes:
        """A whole masked frame (FIN set)."""
        return header(opcode, len(payload), self.key) + self.mask(payload)


def header(opcode: int, length: int, key: bytes) -> bytes:
    """A client frame's header (FIN set, masked) for a payload of ``length`` bytes."""
    if length < 126:
        return bytes((0x80 | opcode, 0x80 | length)) + key
    if length < 65536:
        return bytes((0x80 | opcode, 0xFE)) + length.to_bytes(2, "big") + key
    return bytes((0x80 | opcode, 0xFF)) + length.to_bytes(8, "big") + key


def new_key() -> bytes:
    return base64.b64encode(secrets.token_bytes(16))


def upgrade_request(host: str, path: str, ws_key: bytes, headers: Mapping[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {ws_key.decode()}", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def check_upgrade(head: bytes, ws_key: bytes) -> None:
    """The response head (up to the blank line): 101 with the right Sec-WebSocket-Accept, or
    HandshakeError."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "101":
        raise HandshakeError(f"HTTP {status[1] if len(status) > 1 else '?'}")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    expected = base64.b64encode(hashlib.sha1(ws_key + GUID).digest()).decode()
    if fields.get("sec-websocket-accept") != expected:
        raise HandshakeError("bad Sec-WebSocket-Accept")


class ProtocolViolation(Exception):
    pass


def read_frames(buf: bytearray) -> Iterator[tuple[bool, int, bytes]]:
    """(fin, opcode, payload) of each whole server frame at the start of ``buf``, removed from
    it as they are read; an incomplete frame is left for the next bytes."""
    pos = 0
    try:
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b1 & 0x80:  # a server must not mask (RFC 6455 section 5.1)
                raise ProtocolViolation("masked frame from the server")
            length, at = b1 & 0x7F, pos + 2
            if length == 126:
                if len(buf) - at < 2:
                    return
                length, at = int.from_bytes(buf[at : at + 2], "big"), at + 2
            elif length == 127:
                if len(buf) - at < 8:
                    return
                length, at = int.from_bytes(buf[at : at + 8], "big"), at + 8
            if len(buf) - at < length:
                return
            payload = bytes(buf[at : at + length])
            pos = at + length
            yield b0 & 0x80 != 0, b0 & 0x0F, payload
    finally:
        del buf[:pos]
