"""OPTIONS tells a dispatcher whether an INVITE would be taken: 200 normally, 503 with
Retry-After while the daemon is at capacity or draining (and 200 again when a slot frees up),
against the real daemon over UDP."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from aiosipua import SipResponse

from bridge.simulator.procs import run_daemon
from tests.sip.corpus import SDP
from tests.sipp.support import RawSip, health, wait_for

pytestmark = pytest.mark.sipp


def _options(raw: RawSip, n: int) -> SipResponse:
    branch = f"z9hG4bK-opt{n}"
    raw.send((f"OPTIONS sip:agent@127.0.0.1:{raw.port} SIP/2.0\r\n"
              f"Via: SIP/2.0/UDP 127.0.0.1:{raw.lport};branch={branch};rport\r\n"
              f"From: <sip:dispatcher@127.0.0.1>;tag=o{n}\r\nTo: <sip:agent@127.0.0.1>\r\n"
              f"Call-ID: options-{n}\r\nCSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\n"
              "Content-Length: 0\r\n\r\n").encode())
    resp, _ = raw.final(branch=branch)
    return resp


def _call(raw: RawSip, call_id: str) -> str:
    return raw.answered_call(call_id, SDP)


def test_options_503_at_capacity_and_while_draining(tmp_path: Path) -> None:
    env = {"VOICE_BRIDGE_SIP__MAX_CALLS": "2", "VOICE_BRIDGE_SIP__RETRY_AFTER_S": "7",
           "VOICE_BRIDGE_DAEMON__DRAIN_TIMEOUT_S": "3"}
    with run_daemon(tmp_path, agent="echo", env=env) as daemon, RawSip(daemon.sip_port) as first, \
            RawSip(daemon.sip_port) as second, RawSip(daemon.sip_port) as pinger:
        assert _options(pinger, 1).status_code == 200
        _call(first, "first-1")
        assert _options(pinger, 2).status_code == 200  # one of two slots taken

        tag = _call(second, "second-1")
        busy = _options(pinger, 3)  # both taken: an INVITE would get 503 too
        assert (busy.status_code, busy.get_header("retry-after")) == (503, "7")
        second.send(second.bye("second-1", tag))
        assert second.final(branch="z9hG4bK-bye1")[0].status_code == 200
        assert wait_for(lambda: health(daemon.http)["active_calls"] == 1, 5)
        assert _options(pinger, 4).status_code == 200  # a slot is free again

        daemon.proc.send_signal(signal.SIGTERM)  # the first call keeps the daemon draining
        assert wait_for(lambda: health(daemon.http)["draining"] is True, 5)
        draining = _options(pinger, 5)
        assert (draining.status_code, draining.get_header("retry-after")) == (503, "7")
        bye = first.recv(10.0)  # the drain timeout ends the first call with our BYE
        assert bye is not None and bytes(bye).startswith(b"BYE ")
        first.answer(bye)
        assert daemon.proc.wait(20) == 0
