"""Call flows against the real daemon with SIPp as the caller: CANCEL before answer, OPTIONS,
hold/resume by re-INVITE, 488 for no common codec, 503 + Retry-After at capacity, late offer
(answer in the ACK), a call over TCP, and a daemon shut down while ringing."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from aiosipua import SipResponse

from bridge.simulator.procs import Daemon, run_daemon
from bridge.simulator.sipp import SCENARIOS, SippResult, have_sipp, run_sipp
from tests.sip.corpus import SDP
from tests.sipp.support import RawSip, health, idle, metric, sipp_background, to_tag, wait_for

pytestmark = [pytest.mark.sipp, pytest.mark.skipif(not have_sipp(), reason="sipp not installed")]

CALLS_TOTAL = "voice_bridge_calls_total"


def _sipp(daemon: Daemon, scenario: str, *args: str, tmp: Path, **kw: Any) -> SippResult:
    return run_sipp(SCENARIOS / scenario, f"127.0.0.1:{daemon.sip_port}", *args, cwd=tmp, **kw)


def _ok(result: SippResult, daemon: Daemon) -> str:
    return f"{result.stdout[-1500:]}\n{result.errors[-1500:]}\n{daemon.logs()[-3000:]}"


def _ended_logs(daemon: Daemon) -> list[dict[str, object]]:
    out = []
    for line in daemon.logs().splitlines():
        if line.startswith("{") and '"call ended"' in line and "bridge.supervisor" in line:
            out.append(json.loads(line))
    return out


def test_cancel_before_answer_gets_487_and_200(tmp_path: Path) -> None:
    # The daemon rings 0.8 s before answering: the caller CANCELs after the 180.
    env = {"VOICE_BRIDGE_SIP__ANSWER_DELAY_MS": "800"}
    with run_daemon(tmp_path, agent="echo", env=env) as daemon:
        result = _sipp(daemon, "uac_cancel.xml", tmp=tmp_path, timeout=15)
        assert result.returncode == 0, _ok(result, daemon)
        assert wait_for(lambda: idle(daemon.http), 5), health(daemon.http)
        time.sleep(1.0)  # let the ring time run out: the canceled call must stay dead
        http = daemon.http
        assert metric(http, CALLS_TOTAL, 'outcome="cancel",transport="sip"') == 1
        assert metric(http, "voice_bridge_sip_responses_total", 'code="487",method="INVITE"') == 1
        assert metric(http, "voice_bridge_sip_responses_total", 'code="200",method="CANCEL"') == 1
        # No 200 to the INVITE ever went out, even after the ring time ran out.
        assert metric(http, "voice_bridge_sip_responses_total", 'code="200",method="INVITE"') == 0


def test_options_lists_allow_and_accept(tmp_path: Path) -> None:
    with run_daemon(tmp_path, agent="echo") as daemon:
        result = _sipp(daemon, "uac_options.xml", tmp=tmp_path, timeout=10)
        assert result.returncode == 0, _ok(result, daemon)
        assert health(daemon.http)["active_calls"] == 0


def test_reinvite_hold_then_resume(tmp_path: Path) -> None:
    with run_daemon(tmp_path, agent="echo") as daemon:
        result = _sipp(daemon, "uac_hold_resume.xml", tmp=tmp_path, timeout=15)
        assert result.returncode == 0, _ok(result, daemon)
        assert wait_for(lambda: idle(daemon.http), 5)
        assert metric(daemon.http, CALLS_TOTAL, 'outcome="bye",transport="sip"') == 1
    directions = re.findall(r'"msg": "media updated".*?"direction": "(\w+)"', daemon.logs())
    assert directions == ["recvonly", "sendrecv"], daemon.logs()[-2000:]


def test_no_common_codec_gets_488(tmp_path: Path) -> None:
    with run_daemon(tmp_path, agent="echo") as daemon:
        result = _sipp(daemon, "uac_expect_488.xml", tmp=tmp_path, timeout=10)
        assert result.returncode == 0, _ok(result, daemon)
        assert idle(daemon.http)
        assert metric(daemon.http, "voice_bridge_sip_responses_total", 'code="488",method="INVITE"') == 1
    assert "no common codec" in daemon.logs()


def test_at_capacity_new_calls_get_503_with_retry_after(tmp_path: Path) -> None:
    env = {"VOICE_BRIDGE_DAEMON__DRAIN_TIMEOUT_S": "0"}
    with run_daemon(tmp_path, "--max-calls", "1", agent="echo", env=env) as daemon:
        target = f"127.0.0.1:{daemon.sip_port}"
        # One call holds the only slot until the daemon hangs it up (drain at the end)...
        holder = sipp_background(SCENARIOS / "uac_wait_bye.xml", tmp_path, target=target)
        try:
            assert wait_for(lambda: health(daemon.http)["active_calls"] == 1), daemon.logs()
            # ...so the next caller is refused with 503 and a Retry-After.
            refused = _sipp(daemon, "uac_expect_503.xml", tmp=tmp_path, timeout=10)
            assert refused.returncode == 0, _ok(refused, daemon)
            assert health(daemon.http)["active_calls"] == 1
            assert metric(daemon.http, "voice_bridge_sip_responses_total", 'code="503",method="INVITE"') == 1
        finally:
            daemon.proc.terminate()  # drain: the daemon BYEs the holder after the drain timeout
            out, _ = holder.communicate(timeout=60)
        assert holder.returncode == 0, out[-1500:]


def test_late_offer_we_offer_in_200_and_take_the_answer_from_the_ack(tmp_path: Path) -> None:
    with run_daemon(tmp_path, agent="echo") as daemon:
        result = _sipp(daemon, "uac_late_offer.xml", tmp=tmp_path, timeout=15)
        assert result.returncode == 0, _ok(result, daemon)
        assert wait_for(lambda: idle(daemon.http), 5)
        # The call ran to the caller's BYE: the ACK's answer was taken (not refused with a BYE)...
        assert metric(daemon.http, CALLS_TOTAL, 'outcome="bye",transport="sip"') == 1
    # ...and it chose PCMA from our PCMU+PCMA offer.
    assert [e["codec"] for e in _ended_logs(daemon)] == ["PCMA"]


def test_call_over_tcp(tmp_path: Path) -> None:
    with run_daemon(tmp_path, agent="echo") as daemon:
        result = _sipp(daemon, "uac_short.xml", "-t", "t1", tmp=tmp_path, calls=3, timeout=15)
        assert result.returncode == 0, _ok(result, daemon)
        assert "(TCP)" in result.stdout
        assert wait_for(lambda: idle(daemon.http), 5)
        assert metric(daemon.http, CALLS_TOTAL, 'outcome="bye",transport="sip"') == 3


def test_shutdown_while_ringing_answers_the_invite_with_503(tmp_path: Path) -> None:
    env = {"VOICE_BRIDGE_SIP__ANSWER_DELAY_MS": "30000", "VOICE_BRIDGE_DAEMON__DRAIN_TIMEOUT_S": "0"}
    with run_daemon(tmp_path, agent="echo", env=env) as daemon, RawSip(daemon.sip_port) as raw:
        raw.send(raw.invite("ringing-1", SDP))
        ringing = [raw.recv(5.0), raw.recv(5.0)]
        assert [m.status_code for m in ringing if isinstance(m, SipResponse)] == [100, 180]
        daemon.proc.send_signal(signal.SIGTERM)
        final, _ = raw.final(10.0)
        assert final.status_code == 503 and final.get_header("retry-after")
        assert to_tag(final) == to_tag(ringing[1])  # the dialog the 180 started
        assert daemon.proc.wait(20) == 0
