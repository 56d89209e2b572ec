"""The README's main job, `voice-bridge demo`, on the echo agent (the conversation agent's call
is covered by test_conversation_call.py): it exits 0 and reports the call."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.simulator.procs import REPO, VOICE_BRIDGE
from bridge.simulator.sipp import have_sipp

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(not have_sipp() or shutil.which("espeak-ng") is None, reason="needs SIPp, espeak-ng"),
]


def test_demo_places_a_call_and_reports_it(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(VOICE_BRIDGE), "demo", "--agent", "echo", "--say", "Hello there.", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "SIPp: completed" in out.stdout
    assert "codec: PCMU" in out.stdout and "packets in:" in out.stdout
    assert list((tmp_path / "recordings").glob("*.wav")), out.stdout
