"""A recorded inbound SIP call to the real daemon (SIPp as the caller, From +919876543210):
the recording gets a `.subject` sidecar with the caller's pseudonymous id, and
`voice-bridge forget` finds and deletes both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.pseudonym import load_key, subject_of
from bridge.simulator.procs import free_port, run_daemon
from bridge.simulator.sipp import have_sipp, media_scenario, run_sipp
from tests.support.audio import chirp_pcm

pytestmark = [pytest.mark.sipp, pytest.mark.skipif(not have_sipp(), reason="needs SIPp")]

CALLER = "+919876543210"  # the From of bridge/simulator/scenarios/uac_media.xml


def test_recording_carries_the_callers_subject_and_forget_deletes_it(tmp_path: Path) -> None:
    data, recordings = tmp_path / "data", tmp_path / "data" / "recordings"
    config = f'[media]\nrecordings_dir = "{recordings}"\n'
    scenario = media_scenario(tmp_path, "PCMU", chirp_pcm(0.5), pause_ms=800)
    with run_daemon(tmp_path, agent="echo", config=config) as daemon:
        result = run_sipp(scenario, f"127.0.0.1:{daemon.sip_port}", cwd=tmp_path, media_port=free_port(),
                          timeout=30)
        assert result.returncode == 0, result.stdout[-2000:] + result.errors + daemon.logs()
    [wav] = list(recordings.glob("*.wav"))
    sidecar = wav.with_suffix(".subject")
    assert sidecar.read_text().strip() == subject_of(load_key(data), CALLER)
    cfg = tmp_path / "forget.toml"
    cfg.write_text(f'[daemon]\ndata_dir = "{data}"\n{config}')
    forget = subprocess.run([sys.executable, "-m", "bridge.cli", "forget", CALLER, "--config", str(cfg)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert forget.returncode == 0 and "recordings=1" in forget.stdout, forget.stdout + forget.stderr
    assert list(recordings.iterdir()) == []
