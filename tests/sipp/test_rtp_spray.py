"""RTP hijack attempts against the real daemon (issue 10): while a caller talks to the echo
agent, a third address (127.0.0.2) sprays RTP at the call's port at 1000 packets/s, once right
after the 200 OK (before the caller's first packet) and once mid-call after the caller paused.
The caller keeps hearing the agent (its own voice echoed), the sprayer gets nothing, and every
sprayed packet is counted as rejected."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from bridge.audio import g711
from bridge.media.rtp_packet import build_rtp, parse_rtp
from bridge.simulator.procs import run_daemon
from tests.sipp.support import RawSip, metric, to_tag, wait_for
from tests.support.audio import best_correlation, chirp_pcm

pytestmark = pytest.mark.sipp


def _sdp(port: int) -> str:
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def _udp(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def _received(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(2048))
        except BlockingIOError:
            return out


def _spray(sprayer: socket.socket, dest: tuple[str, int], packets: int) -> None:
    for i in range(packets):
        sprayer.sendto(build_rtp(0, i, i * 160, 0xBAD, bytes(160)), dest)
        time.sleep(0.001)


def test_rtp_sprayed_from_a_third_address_never_takes_the_call(tmp_path: Path) -> None:
    with run_daemon(tmp_path, agent="echo") as daemon, RawSip(daemon.sip_port) as raw, \
            _udp("127.0.0.1") as caller, _udp("127.0.0.2") as sprayer:
        raw.send(raw.invite("spray-1", _sdp(caller.getsockname()[1])))
        ok, _ = raw.final()
        assert ok.status_code == 200
        m = re.search(rb"m=audio (\d+) ", ok.body)
        assert m is not None
        ours = ("127.0.0.1", int(m.group(1)))
        _spray(sprayer, ours, 200)  # at call start: before the ACK and the caller's first packet
        tag = to_tag(ok)
        raw.send(raw.ack("spray-1", tag))

        voice = g711.encoder("PCMU")(chirp_pcm(2.0))
        heard: list[bytes] = []
        for phase in range(2):
            for i in range(50):  # one second of the caller's voice, 20 ms packets
                seq = phase * 50 + i
                chunk = voice[(seq % 100) * 160:(seq % 100 + 1) * 160]
                caller.sendto(build_rtp(0, seq, seq * 160, 0xCA11, chunk, i == 0), ours)
                time.sleep(0.02)
                heard += _received(caller)
            if phase == 0:
                time.sleep(1.0)  # the caller pauses: the old latch gave way after 0.5 s
                heard += _received(caller)
                before_spray = len(heard)
                _spray(sprayer, ours, 300)  # mid-call
        time.sleep(0.5)
        heard += _received(caller)
        assert wait_for(lambda: metric(daemon.http, "voice_bridge_rtp_rejected_total",
                                       'reason="foreign-source"') == 500, 5)
        assert _received(sprayer) == []  # not one packet of the call went to the third party
        assert len(heard) - before_spray >= 30  # the caller kept hearing the agent after the spray
        echoed = b"".join(g711.decoder("PCMU")(parse_rtp(p).payload) for p in heard[before_spray:])
        corr, _ = best_correlation(g711.decoder("PCMU")(voice[50 * 160:]), echoed)  # the second second
        assert corr > 0.5, corr  # and what it heard is its own voice, not the sprayer's silence
        raw.send(raw.bye("spray-1", tag))
        assert raw.final(branch="z9hG4bK-bye1")[0].status_code == 200
