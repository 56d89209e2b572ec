"""The daemon's shutdown against a caller whose ACK comes late: the 200 went out, the drain
ran out (drain_timeout_s = 0) before the ACK, and the ACK arrives once SIP is stopping. The
caller believes it is in a call, so it must get a BYE (before: the sockets closed first and
the caller was left in a call with no media)."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

from aiosipua import SipRequest, SipResponse

from bridge.simulator.procs import run_daemon
from bridge.sip.wire import parse_message
from tests.sip.uas_harness import invite, request, response_to, to_tag_of


def _next(sock: socket.socket, want: str, limit_s: float = 10.0) -> SipRequest | SipResponse:
    """The next message that is a ``want`` (a status code, or a method), skipping the others."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            msg = parse_message(sock.recv(65535))
        except TimeoutError:
            break
        if (isinstance(msg, SipResponse) and str(msg.status_code) == want) or (
                isinstance(msg, SipRequest) and msg.method == want):
            return msg
    raise AssertionError(f"no {want} within {limit_s} s")


def test_a_200_acked_after_sip_began_stopping_still_gets_a_bye(tmp_path: Path) -> None:
    env = {"VOICE_BRIDGE_DAEMON__DRAIN_TIMEOUT_S": "0"}
    with run_daemon(tmp_path, agent="echo", env=env) as daemon, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        target = ("127.0.0.1", daemon.sip_port)
        sock.sendto(invite(port=port), target)
        ok = _next(sock, "200")
        daemon.proc.send_signal(signal.SIGTERM)  # no ACK yet: the drain hangs up at once
        deadline = time.monotonic() + 10
        while "hanging up remaining calls" not in daemon.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the drain is over: SIP is stopping
        sock.sendto(request("ACK", to_tag=to_tag_of(ok), branch="z9hG4bK-ack-1", port=port), target)
        bye = _next(sock, "BYE", 5.0)
        assert isinstance(bye, SipRequest) and bye.call_id == ok.call_id
        sock.sendto(response_to(bye), target)
        assert daemon.proc.wait(20) == 0, daemon.logs()[-3000:]
