"""Every unit file in systemd/ passes `systemd-analyze verify` (with ExecStart pointed at this
checkout's virtualenv, since /opt/voice-bridge does not exist on a test machine)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).resolve().parents[2] / "systemd").glob("*.service"))
VENV_BIN = Path(sys.executable).parent


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_verifies(unit: Path, tmp_path: Path) -> None:
    text = unit.read_text().replace("/opt/voice-bridge/.venv/bin", str(VENV_BIN))
    copy = tmp_path / unit.name
    copy.write_text(text)
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in proc.stderr.splitlines() if unit.name in line or "error" in line.lower()]
    assert proc.returncode == 0 and not problems, proc.stderr


def test_daemon_unit_is_hardened() -> None:
    text = (Path(__file__).resolve().parents[2] / "systemd" / "voice-bridge.service").read_text()
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
