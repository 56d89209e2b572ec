"""Daemon lifecycle against real SIPp callers: drain on SIGTERM, the daemon hanging up, and no
leaked calls or RTP ports after many short calls."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from bridge.simulator.procs import run_daemon
from bridge.simulator.sipp import SCENARIOS, free_udp_port, have_sipp, run_sipp
from tests.support.audio import chirp_pcm

pytestmark = [pytest.mark.sipp, pytest.mark.skipif(not have_sipp(), reason="sipp not installed")]


def _health(http: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(f"{http}/healthz", timeout=5) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as err:  # 503 while draining still carries the JSON body
        return dict(json.loads(err.read()))


def _metric(http: str, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"{http}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _wait_for(cond: object, limit_s: float = 10.0) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def _sipp_background(scenario: Path, target: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            "sipp",
            target,
            "-sf",
            str(scenario),
            "-m",
            "1",
            "-nostdin",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_udp_port()),
            "-timeout",
            "30s",
            "-timeout_error",
        ],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])  # the signal handlers on both loops
def test_sigterm_drains_then_hangs_up_and_exits_zero(tmp_path: Path, loop: str) -> None:
    env = {"VOICE_BRIDGE_DAEMON__DRAIN_TIMEOUT_S": "2", "VOICE_BRIDGE_DAEMON__EVENT_LOOP": loop}
    with run_daemon(tmp_path, agent="echo", env=env) as daemon:
        assert _health(daemon.http)["event_loop"] == loop
        target = f"127.0.0.1:{daemon.sip_port}"
        caller = _sipp_background(SCENARIOS / "uac_wait_bye.xml", target, tmp_path)
        assert _wait_for(lambda: _health(daemon.http)["active_calls"] == 1), daemon.logs()

        t0 = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        assert _wait_for(lambda: _health(daemon.http)["draining"] is True, 5)
        # While draining, a new INVITE is refused with 503 + Retry-After...
        refused = run_sipp(SCENARIOS / "uac_expect_503.xml", target, cwd=tmp_path, timeout=10)
        assert refused.returncode == 0, refused.stdout[-1500:] + refused.errors
        # ...the active call goes on until the drain timeout, then gets our BYE.
        out, _ = caller.communicate(timeout=30)
        assert caller.returncode == 0, out[-1500:]
        assert time.monotonic() - t0 >= 1.5
        assert daemon.proc.wait(20) == 0
    assert "draining" in daemon.logs()


def test_a_second_sigterm_ends_the_drain_at_once(tmp_path: Path) -> None:
    env = {"VOICE_BRIDGE_DAEMON__DRAIN_TIMEOUT_S": "600"}  # the test would time out waiting for it
    with run_daemon(tmp_path, agent="echo", env=env) as daemon:
        target = f"127.0.0.1:{daemon.sip_port}"
        caller = _sipp_background(SCENARIOS / "uac_wait_bye.xml", target, tmp_path)
        assert _wait_for(lambda: _health(daemon.http)["active_calls"] == 1), daemon.logs()
        daemon.proc.send_signal(signal.SIGTERM)
        assert _wait_for(lambda: _health(daemon.http)["draining"] is True, 5)
        daemon.proc.send_signal(signal.SIGTERM)  # the operator does not want to wait
        out, _ = caller.communicate(timeout=30)
        assert caller.returncode == 0, out[-1500:]  # the call got our BYE
        assert daemon.proc.wait(20) == 0
    assert "second signal: hanging up remaining calls" in daemon.logs()


def test_prompt_agent_plays_then_hangs_up(tmp_path: Path) -> None:
    import wave

    prompt = tmp_path / "prompt.wav"
    with wave.open(str(prompt), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)  # not 8 kHz on purpose: the agent resamples
        w.writeframes(chirp_pcm(1.0, rate=16000))
    env = {"VOICE_BRIDGE_DAEMON__PROMPT_FILE": str(prompt), "VOICE_BRIDGE_DAEMON__PROMPT_LISTEN_S": "0.5"}
    with run_daemon(tmp_path, agent="prompt", env=env) as daemon:
        result = run_sipp(
            SCENARIOS / "uac_wait_bye.xml", f"127.0.0.1:{daemon.sip_port}", cwd=tmp_path, timeout=20
        )
        assert result.returncode == 0, result.stdout[-1500:] + result.errors + daemon.logs()
        assert _wait_for(lambda: _health(daemon.http)["active_calls"] == 0, 5)
        assert (
            _metric(daemon.http, "voice_bridge_calls_total", 'outcome="agent-finished",transport="sip"') == 1
        )


@pytest.mark.slow
def test_a_thousand_short_calls_leak_nothing(tmp_path: Path) -> None:
    # Up to 60 calls at once (-l 60), two ports each (RTP + RTCP): room for all of them.
    with run_daemon(tmp_path, agent="echo", rtp_ports=200) as daemon:
        result = run_sipp(
            SCENARIOS / "uac_short.xml",
            f"127.0.0.1:{daemon.sip_port}",
            "-r",
            "100",
            "-l",
            "60",
            cwd=tmp_path,
            calls=1000,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.errors
        assert _wait_for(lambda: _health(daemon.http)["active_calls"] == 0, 10)
        health = _health(daemon.http)
        assert health["rtp_ports_in_use"] == 0
        assert _metric(daemon.http, "voice_bridge_calls_total", 'outcome="bye",transport="sip"') == 1000


def test_sighup_does_not_end_the_daemon(tmp_path: Path) -> None:
    with run_daemon(tmp_path, agent="echo") as daemon:
        daemon.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert daemon.proc.poll() is None
        assert _health(daemon.http)["sip_bound"] is True
        assert _wait_for(lambda: "SIGHUP ignored" in daemon.logs(), 5)
