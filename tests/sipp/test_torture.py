"""RFC 4475-style torture corpus sent to the real daemon as raw UDP datagrams: each malformed
message gets the exact answer RFC 3261 calls for (or none, when there is nowhere to send one),
valid-but-unusual messages are answered like their plain forms, and afterwards the daemon is
still up, leaks nothing and completes a normal SIPp call."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from aiosipua import SipResponse

from bridge.simulator.procs import run_daemon
from bridge.simulator.sipp import SCENARIOS, have_sipp, run_sipp
from tests.sip.corpus import MALFORMED, UNUSUAL, Case
from tests.sipp.support import RawSip, first_line, health, idle, metric, to_tag, wait_for

pytestmark = [pytest.mark.sipp, pytest.mark.skipif(not have_sipp(), reason="sipp not installed")]


def _sentinel(raw: RawSip, n: int) -> bytes:
    return Case("sentinel", "OPTIONS sip:agent@127.0.0.1:{port} SIP/2.0\n"
                "Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK-sentinel{n};rport\n"
                "From: <sip:s@127.0.0.1>;tag=s{n}\nTo: <sip:agent@127.0.0.1>\nCall-ID: sentinel-{n}\n"
                "CSeq: 1 OPTIONS\nContent-Length: 0", 200).render(raw.port, raw.lport, n)


def _exchange(raw: RawSip, case: Case, n: int) -> list[SipResponse]:
    """Send one case, then a sentinel OPTIONS: the daemon handles datagrams in order, so every
    answer to the case arrives before the sentinel's 200 (no waiting on silence)."""
    raw.send(case.render(raw.port, raw.lport, n))
    raw.send(_sentinel(raw, n))
    got: list[SipResponse] = []
    for _ in range(10):
        msg = raw.recv(5.0)
        assert msg is not None, f"{case.name}: the daemon went quiet (no answer to the sentinel)"
        assert isinstance(msg, SipResponse), f"{case.name}: unexpected request {first_line(msg)}"
        if msg.call_id == f"sentinel-{n}":
            assert msg.status_code == 200
            return got + _late_final(raw, case, got)
        got.append(msg)
    raise AssertionError(f"{case.name}: too many answers")


def _late_final(raw: RawSip, case: Case, got: list[SipResponse]) -> list[SipResponse]:
    """An accepted INVITE is answered by a task (media is bound first), and the daemon reads
    waiting datagrams in batches: its 180/200 may follow the sentinel's 200 (answers to
    different transactions have no order on the wire). Its 100 Trying never does."""
    if case.status is None or case.status < 200 or any(a.status_code >= 200 for a in got):
        return []
    if not any(a.status_code == 100 for a in got):
        return []
    late: list[SipResponse] = []
    for _ in range(5):
        msg = raw.recv(5.0)
        assert isinstance(msg, SipResponse), f"{case.name}: no final answer after 100 Trying"
        late.append(msg)
        if msg.status_code >= 200:
            return late
    raise AssertionError(f"{case.name}: too many answers")


def _ack_final(raw: RawSip, case: Case, n: int, final: SipResponse) -> None:
    """ACK a non-2xx final answer to an INVITE (same branch, §17.1.1.3) so timer G stops."""
    sent = case.render(raw.port, raw.lport, n).decode()
    via = next(line for line in sent.split("\r\n") if line.lower().startswith(("via:", "v:")))
    ack = (f"ACK sip:agent@127.0.0.1:{raw.port} SIP/2.0\r\n{via}\r\n"
           f"From: {final.get_header('from')}\r\nTo: {final.get_header('to')}\r\n"
           f"Call-ID: {final.call_id}\r\nCSeq: {final.get_header('cseq').split()[0]} ACK\r\n"
           "Content-Length: 0\r\n\r\n")
    raw.send(ack.encode())


def test_torture_corpus_then_a_normal_call(tmp_path: Path) -> None:
    with run_daemon(tmp_path, agent="echo") as daemon, RawSip(daemon.sip_port) as raw:
        n = 0
        for case in MALFORMED:
            n += 1
            answers = _exchange(raw, case, n)
            if case.status is None:
                assert answers == [], f"{case.name}: expected silence, got {[first_line(a) for a in answers]}"
                continue
            finals = [a for a in answers if a.status_code >= 200]
            assert [a.status_code for a in finals] == [case.status], (
                f"{case.name}: expected {case.status}, got {[first_line(a) for a in answers]}"
            )
            final = finals[0]
            # The answer is addressed to the request's dialog identifiers (§8.2.6.2)...
            sent = re.search(r"^call-id:(.*)$", case.render(raw.port, raw.lport, n).decode(), re.I | re.M)
            assert final.call_id == (sent.group(1).strip() if sent else ""), case.name
            assert final.get_header("via") and f"{raw.lport}" in final.get_header("via"), case.name
            if final.get_header("to"):
                assert to_tag(final)  # ...with a To tag of ours
            if "INVITE" in (final.get_header("cseq") or "") and final.call_id:
                _ack_final(raw, case, n, final)

        # Unusual but valid: answered like the plain forms; accepted INVITEs are real calls.
        for case in UNUSUAL:
            n += 1
            answers = _exchange(raw, case, n)
            finals = [a for a in answers if a.status_code >= 200]
            assert [a.status_code for a in finals] == [case.status], (
                f"{case.name}: expected {case.status}, got {[first_line(a) for a in answers]}"
            )
            ok = finals[0]
            if "INVITE" not in (ok.get_header("cseq") or ""):
                continue
            assert b"m=audio" in ok.body and b"PCMU/8000" in ok.body, case.name
            call_id = ok.call_id or ""
            tag = to_tag(ok)
            from_tag = f"f{n}"
            raw.send(raw.ack(call_id, tag, from_tag=from_tag, branch=f"z9hG4bK-a{n}"))
            raw.send(raw.bye(call_id, tag, from_tag=from_tag, branch=f"z9hG4bK-b{n}"))
            bye_ok, _ = raw.final()
            assert bye_ok.status_code == 200 and "BYE" in (bye_ok.get_header("cseq") or ""), case.name

        # A datagram too big to be SIP at all, over TCP: the connection is closed, no answer.
        with socket.create_connection(("127.0.0.1", daemon.sip_port), timeout=5) as tcp:
            tcp.sendall(b"OPTIONS sip:agent@127.0.0.1 SIP/2.0\r\nX-Huge: " + b"a" * 70_000)
            assert tcp.recv(4096) == b""  # closed by the daemon

        assert wait_for(lambda: idle(daemon.http), 5), health(daemon.http)
        # Every wire-level reject went through the malformed path (plus the INVITE without a
        # Contact, refused by the call logic), the stray response through its own.
        rejects = sum(1 for c in MALFORMED if c.wire and c.name != "response-stray") + 1
        assert metric(daemon.http, "voice_bridge_sip_dropped_total", 'reason="malformed"') == rejects
        assert metric(daemon.http, "voice_bridge_sip_dropped_total", 'reason="stray-response"') == 1
        assert metric(daemon.http, "voice_bridge_calls_total", 'outcome="bye",transport="sip"') == 2

        # Still up and still answering calls normally.
        target = f"127.0.0.1:{daemon.sip_port}"
        result = run_sipp(SCENARIOS / "uac_short.xml", target, cwd=tmp_path, timeout=15)
        assert result.returncode == 0, result.stdout[-1500:] + result.errors
        assert daemon.proc.poll() is None
        assert wait_for(lambda: idle(daemon.http), 5)
    assert "Traceback" not in daemon.logs()
