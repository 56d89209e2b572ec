"""The daemon with the echo agent, called by SIPp: RTP flows both ways and the audio that
comes back is the audio that was sent (checked on the wire with tcpdump)."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.g711 import decoder, encoder
from bridge.simulator.pcap import read_udp_payloads, rtp_payload
from bridge.simulator.procs import capture_udp, free_port, run_daemon
from bridge.simulator.sipp import PAYLOAD_TYPES as PT
from bridge.simulator.sipp import have_sipp, media_scenario, run_sipp
from tests.support.audio import best_correlation, chirp_pcm

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(not have_sipp(), reason="sipp (Debian sip-tester) not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="tcpdump capture needs root"),
]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


# Each codec on one of the daemon's event loops (daemon.event_loop): both loops carry a call.
@pytest.mark.parametrize(("codec", "loop"), [("PCMU", "uvloop"), ("PCMA", "asyncio")])
def test_echo_call_returns_the_callers_audio(tmp_path: Path, codec: str, loop: str) -> None:
    sent = chirp_pcm(2.0)
    # What the caller really sends is the G.711 round trip of the chirp.
    sent_on_wire = decoder(codec)(encoder(codec)(sent))
    scenario = media_scenario(tmp_path, codec, sent, pause_ms=3000)
    media_port = free_port()
    with run_daemon(tmp_path, agent="echo", env={"VOICE_BRIDGE_DAEMON__EVENT_LOOP": loop}) as daemon:
        with capture_udp(tmp_path / "rtp.pcap", f"udp port {media_port}"):
            result = run_sipp(
                scenario, f"127.0.0.1:{daemon.sip_port}", cwd=tmp_path, media_port=media_port, timeout=30
            )
        assert result.returncode == 0, result.stdout[-2000:] + result.errors + daemon.logs()
        health = json.loads(_get(f"{daemon.http}/healthz"))
        metrics = _get(f"{daemon.http}/metrics")

    packets = read_udp_payloads(tmp_path / "rtp.pcap")
    lo, hi = daemon.rtp_range
    to_caller = [p for p in packets if p[2] == media_port and lo <= p[1] <= hi]
    from_caller = [p for p in packets if p[1] == media_port and lo <= p[2] <= hi]
    assert len(from_caller) >= 95  # 100 packets played
    assert len(to_caller) >= 95

    decode = decoder(codec)
    echoed = b"".join(decode(rtp_payload(p[3])[3]) for p in to_caller if rtp_payload(p[3])[0] == PT[codec])
    corr, _lag = best_correlation(sent_on_wire, echoed)
    assert corr > 0.9, f"echo does not match what was sent (corr={corr:.3f})"
    # Outgoing packets are 20 ms apart (paced), not bursts.
    gaps = np.diff([p[0] for p in to_caller]) * 1000
    assert np.median(gaps) == pytest.approx(20, abs=3)

    assert health["event_loop"] == loop
    assert health["active_calls"] == 0
    assert health["rtp_ports_in_use"] == 0
    assert 'voice_bridge_calls_total{outcome="bye",transport="sip"} 1.0' in metrics
