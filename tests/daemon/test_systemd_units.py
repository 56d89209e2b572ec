"""Every unit file in systemd/ passes `systemd-analyze verify` (with ExecStart pointed at this
checkout's virtualenv, since /opt/voice-bridge does not exist on a test machine)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNITS = sorted([*SYSTEMD.glob("*.service"), *SYSTEMD.glob("*.target")])
VENV_BIN = Path(sys.executable).parent


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_verifies(unit: Path, tmp_path: Path) -> None:
    text = unit.read_text().replace("/opt/voice-bridge/.venv/bin", str(VENV_BIN))
    # A template is verified as an instance, so that its %i specifiers are expanded too.
    name = unit.name.replace("@.", "@1.")
    copy = tmp_path / name
    copy.write_text(text)
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in proc.stderr.splitlines() if name in line or "error" in line.lower()]
    assert proc.returncode == 0 and not problems, proc.stderr


@pytest.mark.parametrize("name", ["voice-bridge.service", "voice-bridge@.service"])
def test_daemon_unit_is_hardened(name: str) -> None:
    text = (SYSTEMD / name).read_text()
    for directive in (
        "Type=notify",
        "WatchdogSec=",
        "EnvironmentFile=",
        "User=voice-bridge",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "Restart=on-failure",
    ):
        assert directive in text


def test_instances_belong_to_the_target() -> None:
    """`systemctl enable voice-bridge@N` hooks the instance under voice-bridge.target, and a stop of
    the target reaches every instance; each instance reads its own ports from its env file."""
    text = (SYSTEMD / "voice-bridge@.service").read_text()
    assert "WantedBy=voice-bridge.target" in text
    assert "PartOf=voice-bridge.target" in text
    assert "EnvironmentFile=/etc/voice-bridge/instances/%i.env" in text
    assert "WantedBy=multi-user.target" in (SYSTEMD / "voice-bridge.target").read_text()


def test_instance_env_files_give_each_instance_its_own_ports() -> None:
    """deploy/instances/N.env.example load as settings; SIP, HTTP and RTP ports never overlap,
    the stream port is the same for all (SO_REUSEPORT), and the SIP ports match dispatcher.list."""
    from bridge.settings import load_settings

    deploy = SYSTEMD.parent / "deploy"
    seen = []
    for env_file in sorted((deploy / "instances").glob("*.env.example")):
        lines = [line for line in env_file.read_text().splitlines() if line and not line.startswith("#")]
        s = load_settings(None, environ=dict(line.split("=", 1) for line in lines))
        rtp = range(s.media.rtp_port_min, s.media.rtp_port_max + 1)
        seen.append((s.sip.listen_port, s.http.listen_port, rtp, s.daemon.stream_listen))
    assert len(seen) >= 2
    assert len({sip for sip, *_ in seen}) == len(seen) and len({http for _, http, *_ in seen}) == len(seen)
    for i, (*_, rtp, _) in enumerate(seen):
        assert all(set(rtp).isdisjoint(other) for *_, other, _ in seen[i + 1:])
    assert len({stream for *_, stream in seen}) == 1
    listed = (deploy / "kamailio" / "dispatcher.list").read_text()
    for sip, *_ in seen:
        assert f"sip:127.0.0.1:{sip} " in listed
