"""baresip 1.0 (Debian `baresip-core`), a real softphone, places an authenticated call to the
daemon: 127.0.0.1 is not trusted, so the INVITE is challenged with the default offer (MD5
alone: baresip 1.0 ends the call with ENOSYS on a 401 that also offers SHA-256, whatever the
order, as seen here), baresip answers the digest, the echo agent takes the call and hears
baresip's audio, and baresip's BYE ends it. Run headless from a config directory made here,
bounded by -t."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import pytest

from bridge.simulator.procs import free_port, free_rtp_range, run_daemon
from tests.sipp.support import health, metric, wait_for
from tests.support.audio import chirp_pcm

pytestmark = [pytest.mark.sipp, pytest.mark.skipif(shutil.which("baresip") is None,
                                                   reason="baresip not installed")]

USER, PASSWORD = "pbx", "baresip-secret"
CONFIG = f"""
[sip.trust]
trusted_cidrs = ["192.0.2.0/24"]
inbound_user = "{USER}"
"""
MODULES = Path("/usr/lib/baresip/modules")


def _baresip_dir(tmp: Path) -> Path:
    conf = tmp / "baresip"
    conf.mkdir()
    with wave.open(str(conf / "voice.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(chirp_pcm(1.0) * 10)
    lo, hi = free_rtp_range(10)
    (conf / "config").write_text("\n".join([
        "poll_method epoll",
        f"sip_listen 127.0.0.1:{free_port()}",
        "sip_transports udp",
        f"audio_player aufile,{conf / 'heard.wav'}",
        f"audio_source aufile,{conf / 'voice.wav'}",
        f"audio_alert aufile,{conf / 'alert.wav'}",
        "audio_srate 8000",
        "audio_channels 1",
        f"rtp_ports {lo}-{hi}",
        f"module_path {MODULES}",
        "module g711.so",
        "module aufile.so",
        "module account.so",
        "module menu.so",
        "net_interface 127.0.0.1",
        "",
    ]))
    # regint=0: no REGISTER, just calls with these credentials.
    account = f"<sip:{USER}@127.0.0.1>;auth_pass={PASSWORD};regint=0;audio_codecs=PCMU"
    (conf / "accounts").write_text(account + "\n")
    return conf


def test_baresip_places_an_authenticated_call(tmp_path: Path) -> None:
    env = {"VOICE_BRIDGE_SIP_INBOUND_PASSWORD": PASSWORD}
    with run_daemon(tmp_path, agent="echo", config=CONFIG, env=env) as daemon:
        conf = _baresip_dir(tmp_path)
        proc = subprocess.run(
            ["baresip", "-f", str(conf), "-e", f"/dial sip:agent@127.0.0.1:{daemon.sip_port}", "-t", "6"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
        out = proc.stdout + proc.stderr
        assert wait_for(lambda: health(daemon.http)["active_calls"] == 0, 10), out
        responses = "voice_bridge_sip_responses_total"
        assert metric(daemon.http, responses, 'code="401",method="INVITE"') >= 1, out + daemon.logs()
        assert metric(daemon.http, responses, 'code="200",method="INVITE"') == 1, out + daemon.logs()
        assert metric(daemon.http, "voice_bridge_calls_total", 'outcome="bye",transport="sip"') == 1, out
        assert metric(daemon.http, "voice_bridge_rtp_packets_total", 'direction="in"') > 50, out
