"""RTP header parsing/building: round trip, optional header parts, malformed input."""

from __future__ import annotations

import struct

import pytest

from bridge.media.rtp_packet import RtpParseError, build_rtp, is_rtcp, parse_rtp


def test_round_trip_keeps_every_field() -> None:
    data = build_rtp(8, 65535, 0xFFFFFFFF, 0x12345678, b"\x01\x02\x03", marker=True)
    pkt = parse_rtp(data)
    assert (pkt.marker, pkt.payload_type, pkt.sequence, pkt.timestamp, pkt.ssrc) == (
        True, 8, 65535, 0xFFFFFFFF, 0x12345678,
    )
    assert pkt.payload == b"\x01\x02\x03"
    assert not parse_rtp(build_rtp(0, 1, 2, 3, b"x")).marker


def test_csrc_extension_and_padding_are_skipped() -> None:
    first = 0x80 | 0x20 | 0x10 | 2  # padding, extension, 2 CSRCs
    header = struct.pack("!BBHII", first, 0, 7, 160, 99) + struct.pack("!II", 1, 2)
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\xaa\xbb\xcc\xdd"
    payload = b"audio!"
    padding = b"\x00\x00\x03"
    pkt = parse_rtp(header + extension + payload + padding)
    assert pkt.payload == payload and pkt.sequence == 7 and pkt.timestamp == 160


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x00\x00",
        bytes([0x40]) + bytes(11),  # version 1
        bytes([0x90, 0]) + bytes(10) + b"\x00",  # extension header cut off
        bytes([0xA0, 0]) + bytes(10) + b"\x00",  # padding byte 0
        bytes([0xA0, 0]) + bytes(10) + b"\x09",  # padding longer than the payload
        bytes([0x8F, 0]) + bytes(10),  # 15 CSRCs announced, none present
    ],
)
def test_malformed_packets_raise_a_parse_error(data: bytes) -> None:
    with pytest.raises(RtpParseError):
        parse_rtp(data)


def test_rtcp_is_told_apart_from_rtp() -> None:
    assert is_rtcp(bytes([0x80, 200]) + bytes(6))  # SR
    assert is_rtcp(bytes([0x81, 203]) + bytes(6))  # BYE
    assert not is_rtcp(build_rtp(0, 1, 2, 3, b""))
    assert not is_rtcp(build_rtp(101, 1, 2, 3, b"", marker=True))  # 0x80|101 = 229
