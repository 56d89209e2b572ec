"""RTCP reports a leg sends every few seconds (RFC 3550 §6.4), built with aiortp's packets."""

from __future__ import annotations

from aiortp import RtcpByePacket, RtcpRrPacket, RtcpSdesPacket, RtcpSrPacket
from aiortp.clock import current_ntp_time
from aiortp.packet import RtcpReceiverInfo, RtcpSenderInfo, RtcpSourceInfo

from bridge.media.rx_stats import ReceiveStats

CNAME = b"voice-bridge"


class ReportBuilder:
    """Keeps the interval counters that fraction-lost needs between two reports."""

    def __init__(self, ssrc: int) -> None:
        self._ssrc = ssrc
        self._prior_expected = 0
        self._prior_received = 0

    def _block(self, rx: ReceiveStats) -> list[RtcpReceiverInfo]:
        if rx.ssrc is None:
            return []
        expected = rx.received + rx.lost
        exp_int = expected - self._prior_expected
        rec_int = rx.received - self._prior_received
        self._prior_expected, self._prior_received = expected, rx.received
        lost_int = exp_int - rec_int
        fraction = (lost_int << 8) // exp_int if exp_int > 0 and lost_int > 0 else 0
        return [
            RtcpReceiverInfo(
                ssrc=rx.ssrc,
                fraction_lost=min(fraction, 255),
                packets_lost=min(rx.lost, 0x7FFFFF),
                highest_sequence=rx.extended_max_seq & 0xFFFFFFFF,
                jitter=int(rx.jitter_ms * 8) & 0xFFFFFFFF,
                lsr=0,
                dlsr=0,
            )
        ]

    def report(self, rx: ReceiveStats, rtp_ts: int, packets_sent: int, octets_sent: int) -> bytes:
        blocks = self._block(rx)
        sdes = RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=self._ssrc, items=[(1, CNAME)])])
        if packets_sent:
            info = RtcpSenderInfo(
                ntp_timestamp=current_ntp_time(),
                rtp_timestamp=rtp_ts & 0xFFFFFFFF,
                packet_count=packets_sent & 0xFFFFFFFF,
                octet_count=octets_sent & 0xFFFFFFFF,
            )
            head: bytes = bytes(RtcpSrPacket(ssrc=self._ssrc, sender_info=info, reports=blocks))
        else:
            head = bytes(RtcpRrPacket(ssrc=self._ssrc, reports=blocks))
        return head + bytes(sdes)

    def bye(self) -> bytes:
        # A compound packet must start with a report (RFC 3550 §6.1).
        return bytes(RtcpRrPacket(ssrc=self._ssrc)) + bytes(RtcpByePacket(sources=[self._ssrc]))
