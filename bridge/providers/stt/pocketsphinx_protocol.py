"""Wire format between the pocketsphinx STT provider and its decoder process (pure, no I/O).

Each message is a 1-byte kind, a 4-byte big-endian payload length, then the payload.
Parent -> worker: AUDIO (8 kHz s16le), FINALIZE, RESET. Worker -> parent: READY, INTERIM
(UTF-8 text), FINAL (1 byte end-of-utterance flag + UTF-8 text), ERROR (UTF-8 reason).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

AUDIO = b"A"
FINALIZE = b"F"
RESET = b"R"

READY = b"r"
INTERIM = b"i"
FINAL = b"f"
ERROR = b"e"

_HEADER = struct.Struct(">cI")
HEADER_SIZE = _HEADER.size
MAX_PAYLOAD = 1 << 20  # 1 MiB: a corrupt length must not make us buffer gigabytes


class ProtocolError(ValueError):
    """The byte stream is not this protocol (corrupt or desynchronised)."""


@dataclass(frozen=True, slots=True)
class Message:
    kind: bytes
    payload: bytes = b""


def encode(kind: bytes, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return _HEADER.pack(kind, len(payload)) + payload


def parse_header(header: bytes) -> tuple[bytes, int]:
    kind, length = _HEADER.unpack(header)
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"message length {length} exceeds {MAX_PAYLOAD}")
    return kind, length


def encode_final(text: str, end_of_utterance: bool) -> bytes:
    return encode(FINAL, (b"\x01" if end_of_utterance else b"\x00") + text.encode())


def decode_final(payload: bytes) -> tuple[str, bool]:
    if not payload:
        raise ProtocolError("empty FINAL payload")
    return payload[1:].decode(errors="replace"), payload[0] == 1


class MessageParser:
    """Incremental parser: ``feed()`` bytes as they arrive, get whole messages back."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= HEADER_SIZE:
            kind, length = parse_header(bytes(self._buf[:HEADER_SIZE]))
            end = HEADER_SIZE + length
            if len(self._buf) < end:
                break
            out.append(Message(kind, bytes(self._buf[HEADER_SIZE:end])))
            del self._buf[:end]
        return out
