"""The shipped Kamailio front (deploy/kamailio/) with two real daemons behind it and SIPp
callers: calls spread over both daemons, a SIGTERM'd daemon drains while the other takes the
new calls, a SIGKILL'd daemon is taken out by the OPTIONS probes, pike stops a flood."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.simulator.procs import Daemon, run_daemon
from bridge.simulator.sipp import SCENARIOS, free_udp_port, have_sipp
from devkit.kamailio import DISPATCHER_LIST, Front, check_config, have_kamailio, run_front
from tests.sipp.support import health, metric, wait_for

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(not (have_sipp() and have_kamailio()), reason="needs sipp and kamailio"),
]

ROUTED = SCENARIOS / "uac_routed.xml"
PROBE_S = 1
FR_TIMER_MS = 1500


def _sipp(
    front: Front, cwd: Path, calls: int, rate: int, hold_ms: int, timeout_s: int = 60
) -> subprocess.Popen[str]:
    cmd = ["sipp", front.target, "-sf", str(ROUTED), "-m", str(calls), "-r", str(rate), "-d", str(hold_ms),
           "-nostdin", "-i", "127.0.0.1", "-p", str(free_udp_port()), "-timeout", f"{timeout_s}s",
           "-timeout_error", "-trace_err", "-error_file", str(cwd / f"sipp_errors_{time.monotonic_ns()}.log")]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen[str], limit_s: float = 90) -> tuple[int, int, str]:
    """Wait for SIPp; (successful, failed) calls from its final statistics."""
    out, _ = proc.communicate(timeout=limit_s)

    def count(name: str) -> int:
        found = re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", out)
        assert found, out[-3000:]
        return int(found[-1])

    return count("Successful call"), count("Failed call"), out


def _calls_done(daemon: Daemon) -> float:
    """Calls the daemon finished (all outcomes)."""
    pattern = r'^voice_bridge_calls_total\{[^}]*transport="sip"[^}]*\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, _metrics(daemon), re.M))


def _metrics(daemon: Daemon) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{daemon.http}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _invites(daemon: Daemon) -> float:
    return metric(daemon.http, "voice_bridge_sip_requests_total", 'method="INVITE"')


@contextlib.contextmanager
def _two_daemons(tmp: Path, env: dict[str, str] | None = None) -> Iterator[tuple[Daemon, Daemon]]:
    base = {"VOICE_BRIDGE_DAEMON__DRAIN_TIMEOUT_S": "30", **(env or {})}
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    # 120 RTP ports: room for 60 calls each, so one daemon can take all the new calls
    with run_daemon(tmp / "a", env=base, rtp_ports=120) as a, \
            run_daemon(tmp / "b", env=base, rtp_ports=120) as b:
        yield a, b


@contextlib.contextmanager
def _behind_front(tmp: Path) -> Iterator[tuple[Daemon, Daemon, Front]]:
    """Two daemons, Kamailio in front probing them every PROBE_S s; both seen up."""
    with _two_daemons(tmp) as (a, b), run_front(tmp / "k", [a.sip_port, b.sip_port],
                                                probe_interval_s=PROBE_S, fr_timer_ms=FR_TIMER_MS) as front:
        assert wait_for(lambda: _both_active(front, a, b), 10), front.rpc("dispatcher.list")
        yield a, b, front


def _both_active(front: Front, a: Daemon, b: Daemon) -> bool:
    flags = front.destinations()
    return flags.get(a.sip_port, "").startswith("A") and flags.get(b.sip_port, "").startswith("A")


def test_shipped_config_and_list_parse() -> None:
    proc = check_config(f'DS_LIST="{DISPATCHER_LIST}"', 'CTL_SOCKET="unix:/tmp/voice-bridge-kamailio-check"')
    assert proc.returncode == 0 and "config file ok" in proc.stdout + proc.stderr, proc.stderr[-3000:]


def test_calls_spread_over_both_daemons(tmp_path: Path) -> None:
    with _behind_front(tmp_path) as (a, b, front):
        ok, failed, out = _finish(_sipp(front, tmp_path, calls=40, rate=10, hold_ms=1500))
        assert (ok, failed) == (40, 0), out[-3000:]
        assert wait_for(lambda: _calls_done(a) + _calls_done(b) == 40, 10)
        on_a, on_b = _calls_done(a), _calls_done(b)
        # algorithm 10 sends each new call to the daemon with fewer calls in progress
        assert on_a >= 10 and on_b >= 10, (on_a, on_b)
        assert wait_for(lambda: health(a.http)["active_calls"] == 0 == health(b.http)["active_calls"], 10)


def test_sigterm_drains_one_daemon_while_the_other_takes_new_calls(tmp_path: Path) -> None:
    with _behind_front(tmp_path) as (a, b, front):
        sipp = _sipp(front, tmp_path, calls=40, rate=8, hold_ms=2500)
        assert wait_for(lambda: health(a.http)["active_calls"] >= 3, 20)
        invites_b_before = _invites(b)
        a.proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: not front.destinations().get(a.sip_port, "A").startswith("A"), 10), \
            front.rpc("dispatcher.list")  # its OPTIONS answer is 503 now: no new calls
        ok, failed, out = _finish(sipp)
        assert (ok, failed) == (40, 0), out[-3000:] + front.logs()[-5000:]  # no call failed, new or live
        assert a.proc.wait(30) == 0  # drained: its live calls ended by the callers' BYEs
        logs = a.logs()
        assert "drain timeout" not in logs and '"reason": "bye"' in logs
        assert _invites(b) > invites_b_before
        assert wait_for(lambda: health(b.http)["active_calls"] == 0, 10)


def test_sigkill_new_calls_go_to_the_survivor(tmp_path: Path) -> None:
    with _behind_front(tmp_path) as (a, b, front):
        first = _sipp(front, tmp_path, calls=16, rate=8, hold_ms=1500, timeout_s=20)
        assert wait_for(lambda: health(a.http)["active_calls"] >= 2, 20)
        live_on_a = int(health(a.http)["active_calls"])  # type: ignore[call-overload]
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        killed_at = time.monotonic()
        # one probe interval, plus the probe's own transaction timeout, takes it out
        assert wait_for(lambda: front.destinations().get(a.sip_port, "").startswith("I"),
                        PROBE_S + FR_TIMER_MS / 1000 + 5), front.rpc("dispatcher.list")
        taken_out_s = time.monotonic() - killed_at
        ok, failed, out = _finish(first)
        # only calls that were live on the killed daemon may fail (their BYE goes unanswered);
        # calls set up meanwhile failed over to the survivor
        assert ok >= 16 - live_on_a - 2, out[-3000:]

        done_b = _calls_done(b)
        ok, failed, out = _finish(_sipp(front, tmp_path, calls=20, rate=10, hold_ms=300))
        assert (ok, failed) == (20, 0), out[-3000:]
        assert wait_for(lambda: _calls_done(b) - done_b == 20, 10)
        assert taken_out_s < PROBE_S + FR_TIMER_MS / 1000 + 5


def test_pike_blocks_a_flooding_source(tmp_path: Path) -> None:
    with _two_daemons(tmp_path) as (a, b), run_front(tmp_path / "k", [a.sip_port, b.sip_port],
                                                     pike_density=20) as front:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            # Kamailio listens on 127.0.0.1, which is "myself" (exempt): flood from 127.0.0.2
            s.bind(("127.0.0.2", 0))
            lport = s.getsockname()[1]
            for n in range(100):  # 100 OPTIONS at once, far over 20 per 2 s
                s.sendto(_options(front.port, lport, n), ("127.0.0.1", front.port))
            s.settimeout(1.0)
            answered = 0
            with contextlib.suppress(TimeoutError):
                while s.recv(65535):
                    answered += 1
            assert 0 < answered < 100
            s.sendto(_options(front.port, lport, 999), ("127.0.0.1", front.port))
            with pytest.raises(TimeoutError):
                s.recv(65535)  # banned
        assert "pike: blocking 127.0.0.2" in front.logs()
        # the flood did not touch anyone else: a caller on 127.0.0.1 still gets through
        ok, failed, out = _finish(_sipp(front, tmp_path, calls=2, rate=2, hold_ms=100))
        assert (ok, failed) == (2, 0), out[-3000:]


def _options(port: int, lport: int, n: int) -> bytes:
    return (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK-flood{n}\r\n"
            f"From: <sip:flood@127.0.0.1>;tag=f{n}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: flood-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def test_a_daemon_on_another_address_takes_calls_as_one_on_another_host_would(tmp_path: Path) -> None:
    # 127.0.0.2 stands in for another machine (same kernel and VM: not a second host): the
    # dispatcher list names it by address, its OPTIONS probes find it up, and calls routed
    # there complete (its SDP and Contact carry 127.0.0.2; the caller's ACK/BYE follow the
    # Record-Route through the front).
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with run_daemon(tmp_path / "a", rtp_ports=60) as a, \
            run_daemon(tmp_path / "b", rtp_ports=60, host="127.0.0.2") as b, \
            run_front(tmp_path / "k", [(a.host, a.sip_port), (b.host, b.sip_port)],
                      probe_interval_s=PROBE_S) as front:
        assert f"sip:127.0.0.2:{b.sip_port}" in front.rpc("dispatcher.list")
        assert wait_for(lambda: _both_active(front, a, b), 10), front.rpc("dispatcher.list")
        ok, failed, out = _finish(_sipp(front, tmp_path, calls=10, rate=10, hold_ms=1000))
        assert (ok, failed) == (10, 0), out[-3000:]
        assert wait_for(lambda: _calls_done(a) + _calls_done(b) == 10, 10)
        assert _calls_done(b) >= 3, (_calls_done(a), _calls_done(b))  # fewest calls in progress first
