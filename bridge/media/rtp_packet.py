"""RTP header parsing and building (RFC 3550 §5.1), kept to what an audio leg needs.

Pure functions on bytes: the hot path runs once per packet per call, so this avoids the
per-packet objects of a general RTP library (aiortp's RtpPacket builds extension maps).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

_HEADER = struct.Struct("!BBHII")
HEADER_LEN = 12


class RtpHeader(NamedTuple):
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


class RtpParseError(ValueError):
    pass


def is_rtcp(data: bytes) -> bool:
    """RTCP packet types 192-223 sit where RTP keeps marker+PT (RFC 5761 §4)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_rtp(data: bytes) -> RtpHeader:
    """Header fields and payload; CSRCs, extension and padding are skipped."""
    if len(data) < HEADER_LEN:
        raise RtpParseError(f"RTP packet too short ({len(data)} bytes)")
    first, second, seq, ts, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise RtpParseError("not RTP version 2")
    pos = HEADER_LEN + 4 * (first & 0x0F)
    if first & 0x10:
        if len(data) < pos + 4:
            raise RtpParseError("truncated RTP header extension")
        pos += 4 + 4 * int.from_bytes(data[pos + 2 : pos + 4], "big")
    end = len(data)
    if first & 0x20:
        pad = data[-1]
        if pad == 0 or pad > end - pos:
            raise RtpParseError("invalid RTP padding")
        end -= pad
    if pos > end:
        raise RtpParseError("RTP header longer than the packet")
    return RtpHeader(bool(second & 0x80), second & 0x7F, seq, ts, ssrc, data[pos:end])


def build_rtp(payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes,
              marker: bool = False) -> bytes:
    return _HEADER.pack(0x80, (0x80 if marker else 0) | payload_type, sequence & 0xFFFF,
                        timestamp & 0xFFFFFFFF, ssrc) + payload
