"""Write RTP streams as pcap files SIPp can play; read UDP payloads back from tcpdump captures."""

from __future__ import annotations

import struct
from pathlib import Path

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # DLT_EN10MB


def _ipv4_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _udp_frame(payload: bytes, sport: int, dport: int) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])
    )
    ip = ip[:10] + struct.pack("!H", _ipv4_checksum(ip)) + ip[12:]
    eth = b"\x00" * 12 + b"\x08\x00"
    return eth + ip + udp


def write_rtp_pcap(
    path: Path, payloads: list[bytes], payload_type: int, ptime_ms: int = 20, ssrc: int = 0x1234ABCD
) -> None:
    """One RTP packet per payload, ptime apart (SIPp replays with the pcap's timing)."""
    samples = 8 * ptime_ms
    with open(path, "wb") as fh:
        fh.write(_PCAP_HEADER)
        for i, payload in enumerate(payloads):
            marker = 0x80 if i == 0 else 0
            rtp = (
                struct.pack(
                    "!BBHII", 0x80, marker | payload_type, i & 0xFFFF, (i * samples) & 0xFFFFFFFF, ssrc
                )
                + payload
            )
            frame = _udp_frame(rtp, 6000, 6000)
            t_us = i * ptime_ms * 1000
            fh.write(struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(frame), len(frame)))
            fh.write(frame)


def read_udp_payloads(path: Path) -> list[tuple[float, int, int, bytes]]:
    """(time, src port, dst port, payload) for every IPv4/UDP packet of a capture (Ethernet or
    Linux cooked link types, as tcpdump -i lo writes them)."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nanos = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_len = {1: 14, 113: 16, 276: 20, 0: 4}.get(linktype, 14)
    out = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[off : off + 16])
        off += 16
        pkt = data[off : off + incl]
        off += incl
        ip = pkt[link_len:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport, ulen = struct.unpack("!HHH", ip[ihl : ihl + 6])
        payload = ip[ihl + 8 : ihl + ulen]
        out.append((sec + frac / (1e9 if nanos else 1e6), sport, dport, payload))
    return out


def rtp_payload(packet: bytes) -> tuple[int, int, int, bytes]:
    """(payload type, sequence, timestamp, payload) of an RTP packet without extensions/CSRCs."""
    b0, b1, seq, ts = struct.unpack("!BBHI", packet[:8])
    cc = b0 & 0x0F
    return b1 & 0x7F, seq, ts, packet[12 + 4 * cc :]
