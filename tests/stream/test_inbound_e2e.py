"""The whole inbound stream path across processes: the simulator signs and POSTs the answer
webhook to `voice-bridge xml-server` over real HTTP, follows the <Stream> it gets to the real
daemon (`voice-bridge run` with daemon.stream_listen), the echo agent answers, the caller hears
it; then the hangup callback. Also the refusal when the webhook is not signed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import urllib.request
from pathlib import Path

from bridge.audio.wavfile import read_wav_8k_mono, write_wav
from bridge.simulator.plivo.network import NetworkProfile
from bridge.simulator.plivo.simulator import CallSpec, simulate_call
from bridge.simulator.procs import VOICE_BRIDGE, free_port, run_daemon
from devkit.xml_proc import run_xml_server
from tests.stream.support import best_correlation, tone

AUTH_TOKEN = "ZmFrZS1wbGl2by1hdXRoLXRva2Vu"
SECRET = "e2e-stream-secret"


def test_inbound_stream_call_through_xml_server_and_daemon(tmp_path: Path) -> None:
    stream_port = free_port()
    env = {"VOICE_BRIDGE_STREAM_SECRET": SECRET, "PLIVO_AUTH_TOKEN": AUTH_TOKEN}
    xml_cfg = tmp_path / "xml.toml"
    xml_cfg.write_text(
        f'[plivo]\nmode = "stream"\nstream_url = "ws://127.0.0.1:{stream_port}/stream"\n'
        f'trusted_proxies = ["127.0.0.1/32"]\nnonce_db = "{tmp_path / "n.sqlite"}"\n'
    )
    daemon_cfg = f'[daemon]\nstream_listen = "127.0.0.1:{stream_port}"\n'
    lines: list[str] = []
    with run_daemon(tmp_path, config=daemon_cfg, env=env, agent="echo") as daemon, \
            run_xml_server(xml_cfg, env=env) as xml:
        sent = tone(800)
        # The echo agent cannot keep audio ahead of jitter: latency only, so the echo is whole.
        spec = CallSpec(answer_url=f"{xml.base}/answer", caller_pcm=sent, auth_token=AUTH_TOKEN, tail_s=1.0,
                        network=NetworkProfile(jitter_ms=0))
        call = asyncio.run(simulate_call(spec, printer=lines.append))
        with urllib.request.urlopen(f"{daemon.http}/healthz", timeout=5) as resp:
            health = json.loads(resp.read())
        caller_wav = write_wav(tmp_path / "caller.wav", tone(400))
        cli = subprocess.run(
            [str(VOICE_BRIDGE), "simulate-call", "--answer-url", f"{xml.base}/answer", "--audio",
             str(caller_wav), "--record", str(tmp_path / "heard.wav"), "--tail", "0.8", "--jitter-ms", "0",
             "--json"],
            capture_output=True, text=True, timeout=60, env={**os.environ, "PLIVO_AUTH_TOKEN": AUTH_TOKEN},
        )
        unsigned = asyncio.run(simulate_call(CallSpec(answer_url=f"{xml.base}/answer"), printer=lines.append))
    assert call.ok, "\n".join(lines)
    assert call.stream is not None and call.stream.ended_by == "caller"
    corr, _ = best_correlation(sent, call.stream.heard)
    assert corr > 0.95, corr
    assert [status for _, status in call.followups] == [200, 200, 200]  # StartStream, StopStream, hangup
    assert call.stream_events == ["StartStream", "StopStream"]
    assert health["stream_calls"] == 0 and health["stream_listening"] is True
    assert unsigned.answer is not None and unsigned.answer.status == 403 and not unsigned.ok
    assert "webhook rejected (403)" in xml.logs()
    assert cli.returncode == 0, cli.stdout + cli.stderr
    summary = json.loads(cli.stdout.strip().splitlines()[-1])
    assert summary["ok"] and summary["plan"] == "StreamPlan" and summary["agent_audio_ms"] >= 400
    assert summary["network_rtt_ms"] > 0  # the CLI plays the stream over a delayed network
    assert "opening audio stream" in cli.stdout
    heard = read_wav_8k_mono(tmp_path / "heard.wav")
    corr, _ = best_correlation(tone(400), heard)
    assert corr > 0.95
    assert "stream call started" in daemon.logs() and "+919876543210" not in daemon.logs()


def test_a_stream_that_cannot_open_ends_in_the_spoken_fallback(tmp_path: Path) -> None:
    """No daemon listening: Plivo reports DroppedStream and runs the element after <Stream>."""
    dead_port = free_port()
    xml_cfg = tmp_path / "xml.toml"
    xml_cfg.write_text(
        f'[plivo]\nmode = "stream"\nstream_url = "ws://127.0.0.1:{dead_port}/stream"\n'
        f'trusted_proxies = ["127.0.0.1/32"]\nnonce_db = "{tmp_path / "n.sqlite"}"\n'
        'apology_text = "Sorry, the assistant is unavailable."\n'
    )
    env = {"VOICE_BRIDGE_STREAM_SECRET": SECRET, "PLIVO_AUTH_TOKEN": AUTH_TOKEN}
    lines: list[str] = []
    with run_xml_server(xml_cfg, env=env) as xml:
        spec = CallSpec(answer_url=f"{xml.base}/answer", caller_pcm=tone(200), auth_token=AUTH_TOKEN)
        call = asyncio.run(simulate_call(spec, printer=lines.append))
        logs = xml.logs()
    assert call.ok, "\n".join(lines)
    assert call.stream_events == ["DroppedStream"]
    assert call.after_stream is not None and "unavailable" in getattr(call.after_stream, "text", "")
    assert "stream dropped" in logs
