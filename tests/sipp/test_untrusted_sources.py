"""Requests from untrusted sources against the real daemon (127.0.0.1 taken out of the trusted
networks): digest auth for INVITE with both algorithms offered in the configured order, a
replayed Authorization header refused, and floods of non-INVITE requests (REGISTER, MESSAGE,
SUBSCRIBE, BYE) limited like INVITE floods: answers for the burst, 503s, then silence."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from aiosipua import SipResponse
from aiosipua.headers import parse_auth

from bridge.simulator.procs import run_daemon
from tests.sip.corpus import SDP
from tests.sipp.support import RawSip, metric, to_tag

pytestmark = pytest.mark.sipp

USER, PASSWORD, REALM = "pbx", "correct horse", "voice-bridge"
CONFIG = f"""
[sip.trust]
trusted_cidrs = ["192.0.2.0/24"]
inbound_user = "{USER}"
realm = "{REALM}"
digest_algorithms = ["MD5", "SHA-256"]
rate_per_source = 1.0
burst_per_source = 10
"""
ENV = {"VOICE_BRIDGE_SIP_INBOUND_PASSWORD": PASSWORD}


def authorization(challenge: str, method: str, uri: str, nc: int = 1) -> str:
    """The client side of RFC 7616 (qop=auth), written out here from the RFC."""
    p = parse_auth(challenge).params
    algorithm = p.get("algorithm", "MD5")
    hasher = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]

    def h(s: str) -> str:
        return hasher(s.encode()).hexdigest()

    nonce, ncs, cnonce = p["nonce"], f"{nc:08x}", "7f3a9c01"
    response = h(f"{h(f'{USER}:{REALM}:{PASSWORD}')}:{nonce}:{ncs}:{cnonce}:auth:{h(f'{method}:{uri}')}")
    return (f'Digest username="{USER}", realm="{REALM}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm={algorithm}, qop=auth, nc={ncs}, cnonce="{cnonce}"')


def _with_header(request: bytes, name: str, value: str) -> bytes:
    head, sep, body = request.partition(b"\r\n\r\n")
    return head + f"\r\n{name}: {value}".encode() + sep + body


def _invite(raw: RawSip, call_id: str, branch: str, cseq: int = 1, auth: str | None = None) -> bytes:
    data = raw.invite(call_id, SDP, branch=branch).replace(b"CSeq: 1 INVITE", f"CSeq: {cseq} INVITE".encode())
    return _with_header(data, "Authorization", auth) if auth else data


def _ack_error(raw: RawSip, final: SipResponse, branch: str, cseq: int) -> None:
    raw.send(raw.ack(final.call_id or "", to_tag(final), branch=branch).replace(
        b"CSeq: 1 ACK", f"CSeq: {cseq} ACK".encode()))


def test_digest_call_then_the_captured_authorization_is_refused(tmp_path: Path) -> None:
    with run_daemon(tmp_path, agent="echo", config=CONFIG, env=ENV) as daemon, RawSip(daemon.sip_port) as raw:
        uri = f"sip:agent@127.0.0.1:{daemon.sip_port}"
        raw.send(_invite(raw, "auth-1", "z9hG4bK-a1"))
        challenge, _ = raw.final(branch="z9hG4bK-a1")
        assert challenge.status_code == 401
        offered = challenge.get_header_values("www-authenticate")
        assert [parse_auth(v).params.get("algorithm") for v in offered] == ["MD5", "SHA-256"]
        _ack_error(raw, challenge, "z9hG4bK-a1", 1)

        auth = authorization(offered[0], "INVITE", uri)
        raw.send(_invite(raw, "auth-1", "z9hG4bK-a2", cseq=2, auth=auth))
        ok, _ = raw.final(branch="z9hG4bK-a2")
        assert ok.status_code == 200
        tag = to_tag(ok)
        raw.send(raw.ack("auth-1", tag, branch="z9hG4bK-a3").replace(b"CSeq: 1 ACK", b"CSeq: 2 ACK"))
        raw.send(raw.bye("auth-1", tag, cseq=3))
        assert raw.final(branch="z9hG4bK-bye1")[0].status_code == 200

        # An eavesdropper replays the captured INVITE's Authorization in a call of its own.
        raw.send(_invite(raw, "replay-1", "z9hG4bK-r1", auth=auth))
        replayed, _ = raw.final(branch="z9hG4bK-r1")
        assert replayed.status_code == 401
        _ack_error(raw, replayed, "z9hG4bK-r1", 1)
        assert metric(daemon.http, "voice_bridge_calls_total", 'outcome="bye",transport="sip"') == 1


@pytest.mark.parametrize("method", ["REGISTER", "MESSAGE", "SUBSCRIBE", "BYE"])
def test_non_invite_floods_get_the_invite_flood_treatment(tmp_path: Path, method: str) -> None:
    with run_daemon(tmp_path, agent="echo", config=CONFIG, env=ENV) as daemon, RawSip(daemon.sip_port) as raw:
        sent = 40
        for i in range(sent):
            to = "<sip:agent@127.0.0.1>" + (f";tag=made-up-{i}" if method == "BYE" else "")
            raw.send((f"{method} sip:agent@127.0.0.1:{daemon.sip_port} SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP 127.0.0.1:{raw.lport};branch=z9hG4bK-flood{i};rport\r\n"
                      f"From: <sip:flood@127.0.0.1>;tag=f{i}\r\nTo: {to}\r\nCall-ID: flood-{i}\r\n"
                      f"CSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
                      f"Contact: <sip:flood@127.0.0.1:{raw.lport}>\r\nContent-Length: 0\r\n\r\n").encode())
        answers = raw.drain(1.0)
        codes = [a.status_code for a in answers if isinstance(a, SipResponse)]
        # The burst (10) is answered as usual, the next ~10 get 503, the rest silence (the
        # bucket refills at 1/s while we send: a token or two more at most).
        assert len(codes) < 25 and codes.count(503) >= 8, codes
        assert set(codes) <= {405, 481, 503}
        assert codes[:10] == [481 if method == "BYE" else 405] * 10
        assert metric(daemon.http, "voice_bridge_sip_dropped_total", 'reason="rate-limit"') >= sent - 25
