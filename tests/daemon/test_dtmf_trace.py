"""DTMF on a call with the echo agent leaves a trace: every digit, RFC 4733 or SIP INFO, is
counted (total counter, per-call histogram, the call-end log line) and logged with the digit
masked. Against the real daemon: a raw SIP client and a raw RTP socket of the test."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from aiortp import DtmfEvent

from bridge.media.rtp_packet import build_rtp
from bridge.simulator.procs import run_daemon
from tests.sipp.support import RawSip, metric, metrics_text, to_tag, wait_for

pytestmark = pytest.mark.sipp


def _sdp(port: int) -> str:
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")


def _info(raw: RawSip, call_id: str, tag: str, signal: str) -> bytes:
    body = f"Signal={signal}\r\nDuration=160\r\n"
    return (f"INFO sip:agent@127.0.0.1:{raw.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{raw.lport};branch=z9hG4bK-info1;rport\r\n"
            f"From: <sip:caller@127.0.0.1>;tag=ft1\r\nTo: <sip:agent@127.0.0.1>;tag={tag}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 2 INFO\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/dtmf-relay\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()


def test_dtmf_is_counted_per_call_and_logged_masked(tmp_path: Path) -> None:
    with run_daemon(tmp_path, agent="echo") as daemon, RawSip(daemon.sip_port) as raw, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
        rtp.bind(("127.0.0.1", 0))
        raw.send(raw.invite("dtmf-1", _sdp(rtp.getsockname()[1])))
        ok, _ = raw.final()
        assert ok.status_code == 200
        tag = to_tag(ok)
        m = re.search(rb"m=audio (\d+) ", ok.body)
        assert m is not None
        ours = ("127.0.0.1", int(m.group(1)))
        raw.send(raw.ack("dtmf-1", tag))

        # Digit 7 as RFC 4733 events: start, an update, three end packets (one timestamp).
        steps = [(False, 160), (False, 320), (True, 480), (True, 480), (True, 480)]
        for i, (end, duration) in enumerate(steps):
            payload = DtmfEvent(7, end, 10, duration).serialize()
            rtp.sendto(build_rtp(101, 100 + i, 8000, 0x1234, payload, i == 0), ours)
        raw.send(_info(raw, "dtmf-1", tag, "9"))
        assert raw.final(branch="z9hG4bK-info1")[0].status_code == 200
        assert wait_for(lambda: metric(daemon.http, "voice_bridge_dtmf_events_total",
                                       'direction="in",method="rfc4733"') == 1, 5)
        assert metric(daemon.http, "voice_bridge_dtmf_events_total", 'direction="in",method="sip-info"') == 1

        raw.send(raw.bye("dtmf-1", tag, cseq=3))
        assert raw.final(branch="z9hG4bK-bye1")[0].status_code == 200
        assert wait_for(lambda: metric(daemon.http, "voice_bridge_dtmf_digits_per_call_count") == 1, 5)
        assert metric(daemon.http, "voice_bridge_dtmf_digits_per_call_sum") == 2
        assert "voice_bridge_dtmf_digits_per_call_bucket" in metrics_text(daemon.http)

    records = [json.loads(line) for line in daemon.log_lines if line.startswith("{")]
    digits = [r for r in records if r.get("msg", r.get("message")) == "DTMF received"]
    # Either may be handled first (RTP is read on the media clock's tick): order-free checks.
    assert sorted(r["dtmf_method"] for r in digits) == ["rfc4733", "sip-info"]
    assert sorted(r["dtmf_count"] for r in digits) == [1, 2]
    assert all(r["digit"] == "x" for r in digits)  # the digits (7, 9) never reach the log
    ended = next(r for r in records if r.get("msg", r.get("message")) == "call ended" and "dtmf_in" in r)
    assert ended["dtmf_in"] == 2
