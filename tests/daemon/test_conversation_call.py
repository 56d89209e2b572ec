"""The offline stack end to end over SIP: SIPp speaks a question (espeak-ng over G.711), the
daemon's conversation agent (pocketsphinx -> scripted agent -> espeak-ng) answers, and the
answer is checked in the transcript file and in the RTP the caller received (tcpdump)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.g711 import decoder
from bridge.audio.wavfile import read_wav_8k_mono
from bridge.simulator.pcap import read_udp_payloads, rtp_payload
from bridge.simulator.procs import capture_udp, free_port, run_daemon
from bridge.simulator.sipp import conversation_scenario, have_sipp, run_sipp

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.slow,
    pytest.mark.skipif(not have_sipp(), reason="sipp (Debian sip-tester) not installed"),
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="tcpdump capture needs root"),
]

LEAD_S = 4.0  # the greeting plays first
AFTER_S = 11.0  # room for the answer


def _speech(text: str, path: Path) -> bytes:
    subprocess.run(["espeak-ng", "-v", "en-us+klatt", "-s", "165", "-w", str(path), text],
                   check=True, capture_output=True, timeout=30)
    return read_wav_8k_mono(path)


def _voiced_seconds(pcm: bytes) -> float:
    x = np.frombuffer(pcm[: len(pcm) // 320 * 320], "<i2").astype(np.float64).reshape(-1, 160)
    rms = np.sqrt((x**2).mean(axis=1))
    return float((rms > 300).sum() * 0.02)


def test_a_spoken_question_gets_a_spoken_answer_over_sip(tmp_path: Path) -> None:
    question = _speech("Where are you located?", tmp_path / "q.wav")
    pcm = bytes(int(LEAD_S * 16000)) + question + bytes(int(AFTER_S * 16000))
    scenario = conversation_scenario(tmp_path, "PCMU", pcm, wait_ms=int(len(pcm) / 16) + 500)
    media_port = free_port()
    transcripts = tmp_path / "transcripts"
    env = {"VOICE_BRIDGE_CONVERSATION__TRANSCRIPTS_DIR": str(transcripts)}
    with run_daemon(tmp_path, agent="conversation", env=env, ready_timeout=60) as daemon:
        with capture_udp(tmp_path / "rtp.pcap", f"udp port {media_port}"):
            result = run_sipp(scenario, f"127.0.0.1:{daemon.sip_port}", cwd=tmp_path, media_port=media_port,
                              timeout=len(pcm) / 16000 + 30)
        assert result.returncode == 0, result.stdout[-2000:] + result.errors + daemon.logs()
    # DPDPA: across the whole call, no log line carries the caller's number unmasked.
    assert "9876543210" not in daemon.logs()

    files = list(transcripts.glob("*.jsonl"))
    assert len(files) == 1, daemon.logs()
    events = [json.loads(line) for line in files[0].read_text().splitlines()]
    users = [e for e in events if e.get("event") == "user" or e.get("role") == "user"]
    agents = [e for e in events if e.get("event") == "agent" or e.get("role") == "agent"]
    assert any("located" in e.get("text", "") for e in users), events
    answer = [e for e in agents if "Market Street" in e.get("text", "")]
    assert answer, events
    assert any(e.get("event") == "latency" or "voice_to_voice" in e for e in events), events
    assert "+919876543210" not in files[0].read_text()  # the caller's number is masked

    # The caller really heard it: agent audio on the wire after the question, seconds of speech.
    lo, hi = daemon.rtp_range
    packets = read_udp_payloads(tmp_path / "rtp.pcap")
    to_caller = [p for p in packets if p[2] == media_port and lo <= p[1] <= hi]
    assert to_caller, "no RTP reached the caller"
    start = to_caller[0][0]
    decode = decoder("PCMU")
    question_end = LEAD_S + len(question) / 16000
    after = b"".join(decode(rtp_payload(p[3])[3]) for p in to_caller
                     if p[0] - start > question_end and rtp_payload(p[3])[0] == 0)
    greeting = b"".join(decode(rtp_payload(p[3])[3]) for p in to_caller
                        if p[0] - start < LEAD_S and rtp_payload(p[3])[0] == 0)
    assert _voiced_seconds(greeting) > 0.8  # "Hello! How can I help you today?"
    assert _voiced_seconds(after) > 3.0  # the address answer is several seconds of speech
