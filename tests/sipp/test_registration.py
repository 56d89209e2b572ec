"""REGISTER against a SIPp registrar that demands digest auth: the registrar being down at
start (the daemon retries with backoff), registering once it is up, refreshing before expiry,
unregistering on shutdown; and wrong credentials leave the daemon unregistered, retrying."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from bridge.simulator.procs import free_port, run_daemon
from bridge.simulator.sipp import SCENARIOS, have_sipp
from tests.sipp.support import health, metric, sipp_background, wait_for

pytestmark = [pytest.mark.sipp, pytest.mark.skipif(not have_sipp(), reason="sipp not installed")]

REGISTERED = "voice_bridge_registration_registered"


def _env(registrar_port: int, password: str) -> dict[str, str]:
    prefix = "VOICE_BRIDGE_SIP__REGISTRATION__"
    return {
        # T1 = 50 ms: a REGISTER to a dead registrar times out (64*T1) in 3.2 s, not 32 s.
        "VOICE_BRIDGE_SIP__T1_MS": "50",
        f"{prefix}ENABLED": "true",
        f"{prefix}REGISTRAR": f"127.0.0.1:{registrar_port}",
        f"{prefix}USER": "alice",
        f"{prefix}DOMAIN": "sip.example.test",
        f"{prefix}REFRESH_MARGIN_S": "5",
        f"{prefix}RETRY_MIN_S": "0.2",
        f"{prefix}RETRY_MAX_S": "1",
        "VOICE_BRIDGE_SIP_PASSWORD": password,
    }


def _registrar(tmp: Path, port: int, password: str, granted: int = 6) -> list[str]:
    return ["-p", str(port), "-set", "user", "alice", "-set", "password", password,
            "-set", "realm", "sip.example.test", "-set", "granted", str(granted)]


@pytest.mark.slow
def test_registrar_down_at_start_then_register_refresh_and_unregister(tmp_path: Path) -> None:
    port = free_port()
    with run_daemon(tmp_path, agent="echo", env=_env(port, "s3cret")) as daemon:
        # Nobody listens yet: the first REGISTER times out and the daemon says so.
        assert wait_for(lambda: health(daemon.http)["registration"] == "failed", 10), daemon.logs()
        assert metric(daemon.http, REGISTERED) == 0
        registrar = sipp_background(SCENARIOS / "uas_registrar.xml", tmp_path,
                                    *_registrar(tmp_path, port, "s3cret"), timeout_s=40)
        try:
            # The retry (after a short backoff) meets the registrar: 401, digest, 200.
            assert wait_for(lambda: health(daemon.http)["registration"] == "registered", 10), daemon.logs()
            assert metric(daemon.http, REGISTERED) == 1
            # Granted 6 s with a 5 s margin: refreshed about every second (the registrar counts).
            assert wait_for(lambda: daemon.logs().count('"msg": "registered"') >= 3, 10), daemon.logs()
            assert health(daemon.http)["registration"] == "registered"
        finally:
            # SIGTERM: the daemon unregisters (Expires: 0, authenticated) before it exits.
            daemon.proc.send_signal(signal.SIGTERM)
            out, _ = registrar.communicate(timeout=30)
        assert daemon.proc.wait(20) == 0
        assert registrar.returncode == 0, out[-3000:] + daemon.logs()[-2000:]
    assert "registration failed" in daemon.logs()
    assert "s3cret" not in daemon.logs()


def test_wrong_password_is_refused_and_stays_unregistered(tmp_path: Path) -> None:
    port = free_port()
    registrar = sipp_background(SCENARIOS / "uas_registrar.xml", tmp_path,
                                *_registrar(tmp_path, port, "right-one"), timeout_s=20)
    try:
        with run_daemon(tmp_path, agent="echo", env=_env(port, "wrong-one")) as daemon:
            assert wait_for(lambda: "403 Forbidden" in daemon.logs(), 10), daemon.logs()
            assert health(daemon.http)["registration"] == "failed"
            assert metric(daemon.http, REGISTERED) == 0
    finally:
        out, _ = registrar.communicate(timeout=30)
    assert registrar.returncode != 0, out[-2000:]  # its digest check failed the scenario
