"""The lean load generator (bridge/simulator/plivo/stream_load.py) against the reference Plivo
stream simulator: the same bytes on the wire, and the same calls heard against a real
StreamServer running the echo agent (loopback, a handful of streams, bounded)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re

import pytest

from bench.stream_scaleout import echo_figures
from bridge.agents.echo import run_echo
from bridge.audio.g711 import ulaw_to_pcm
from bridge.callmodel import CallInfo
from bridge.leg import AudioLeg
from bridge.simulator.plivo import lean_ws
from bridge.simulator.plivo.lean_ws import GUID, Masker
from bridge.simulator.plivo.network import NetworkProfile
from bridge.simulator.plivo.stream_load import Clip, LeanCaller, LoadPool
from bridge.stream import protocol
from tests.stream.support import (
    AUTH_TOKEN,
    best_correlation,
    headers_for,
    running_server,
    sim_client,
    tone,
    url,
)


async def echo(leg: AudioLeg, info: CallInfo) -> None:
    await run_echo(leg)


class _Socket:
    """A non-blocking socket's two calls: what was sent is kept, recv gives what was queued."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.incoming = bytearray()

    def send(self, data: bytes) -> int:
        self.out += data
        return len(data)

    def recv(self, size: int) -> bytes:
        if not self.incoming:
            raise BlockingIOError
        data = bytes(self.incoming[:size])
        del self.incoming[:size]
        return data

    def close(self) -> None:
        pass


def _frames(wire: bytes, key: bytes) -> list[tuple[int, bytes]]:
    """(opcode, unmasked payload) of each client frame, every one masked with ``key``."""
    out, pos = [], 0
    while pos < len(wire):
        b0, b1 = wire[pos], wire[pos + 1]
        assert b1 & 0x80, "a client frame must be masked"
        length, at = b1 & 0x7F, pos + 2
        if length == 126:
            length, at = int.from_bytes(wire[at : at + 2], "big"), at + 2
        assert wire[at : at + 4] == key
        at += 4
        data = bytes(b ^ key[i % 4] for i, b in enumerate(wire[at : at + length]))
        out.append((b0 & 0x0F, data))
        pos = at + length
    return out


def test_the_lean_caller_sends_what_the_simulator_sends() -> None:
    masker = Masker(b"\x12\x34\x56\x78")
    caller = LeanCaller("ws://127.0.0.1:9/stream", "call-wire", extra_headers=headers_for("call-wire"),
                        auth_token=AUTH_TOKEN)
    wire = _Socket()
    caller._sock = wire  # type: ignore[assignment]
    request = caller.request().decode()
    assert request.startswith("GET /stream HTTP/1.1\r\nHost: 127.0.0.1:9\r\n")
    assert "X-Plivo-Signature-V3: " in request and "X-Plivo-Signature-V3-Nonce: " in request
    key = re.search(r"Sec-WebSocket-Key: (\S+)", request)
    assert key
    accept = base64.b64encode(hashlib.sha1(key.group(1).encode() + GUID).digest()).decode()
    lean_ws.check_upgrade(f"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept}".encode(),
                          key.group(1).encode())
    with pytest.raises(lean_ws.HandshakeError, match="HTTP 403"):
        lean_ws.check_upgrade(b"HTTP/1.1 403 Forbidden", key.group(1).encode())
    caller.opened(masker)
    pcm = tone(200)
    clip = Clip(pcm, 0.0, masker)
    for _ in range(3):
        caller.on_tick(clip, b"1733130000123")
    sent = _frames(bytes(wire.out), masker.key)
    assert [op for op, _ in sent] == [1, 1, 1, 1]
    start = json.loads(sent[0][1])
    assert start["event"] == "start" and start["start"]["callId"] == "call-wire"
    # the media text is byte for byte the simulator's (same sequence numbers and timestamp)
    sim = caller.sim
    sim._seq = 1
    for n, (_, data) in enumerate(sent[1:]):
        expected = sim.media_message(pcm[n * 320 : (n + 1) * 320], n + 1)
        expected = re.sub(r'"timestamp": "\d+"', '"timestamp": "1733130000123"', expected)
        assert data.decode() == expected
    # a playAudio and a checkpoint from the daemon: played out, then playedStream
    fmt = protocol.MediaFormat("audio/x-mulaw", 8000)
    for text in (protocol.play_audio(fmt, b"\x10" * 200), protocol.checkpoint(sim.stream_id, "vb1")):
        data = text.encode()
        wire.incoming += bytes((0x81, 126)) + len(data).to_bytes(2, "big") + data
    wire.incoming += bytes((0x89, 2)) + b"hi"  # a ping
    wire.out.clear()
    caller.on_tick(clip, b"1733130000143")  # 160 of the 200 bytes: no checkpoint yet
    sent = _frames(bytes(wire.out), masker.key)
    assert sent[0] == (0xA, b"hi")
    assert [json.loads(d)["event"] for _, d in sent[1:]] == ["media"]
    wire.out.clear()
    caller.on_tick(clip, b"1733130000163")  # the rest: the checkpoint has played
    events = [json.loads(d) for _, d in _frames(bytes(wire.out), masker.key)]
    assert [e["event"] for e in events] == ["media", "playedStream"]
    assert events[1]["name"] == "vb1" and events[1]["streamId"] == sim.stream_id
    assert caller.result.received == {"playAudio": 1, "checkpoint": 1}
    assert caller.result.agent_audio_ms == 25 and caller.result.echoed_ticks == 2
    # audio queued then clearAudio: the buffer is dropped (nothing plays), clearedAudio goes back
    wire.out.clear()
    for text in (protocol.play_audio(fmt, b"\x10" * 320), protocol.clear_audio(sim.stream_id)):
        data = text.encode()
        wire.incoming += bytes((0x81, 126)) + len(data).to_bytes(2, "big") + data
    caller.on_tick(clip, b"1733130000173")
    events = [json.loads(d) for _, d in _frames(bytes(wire.out), masker.key)]
    assert [e["event"] for e in events] == ["clearedAudio", "media"]
    assert events[0]["streamId"] == sim.stream_id and caller.result.clears == 1
    assert caller.result.agent_audio_ms == 25  # the cleared audio was never heard
    # the daemon ends the call: its close is answered with the same code
    wire.out.clear()
    wire.incoming += bytes((0x88, 2)) + (1000).to_bytes(2, "big")
    caller.on_tick(clip, b"1733130000183")
    assert _frames(bytes(wire.out), masker.key) == [(0x8, (1000).to_bytes(2, "big"))]
    assert caller.finished and caller.result.ended_by == "bridge" and caller.result.close_code == 1000


async def test_lean_callers_and_the_simulator_hear_the_same_echo_from_a_real_stream_server() -> None:
    sent = tone(1000)
    async with running_server(echo) as server:
        sims = [sim_client(server, call_uuid=f"sim-{n}", extra_headers=headers_for(f"sim-{n}"),
                           network=NetworkProfile.none()) for n in range(3)]
        lean = [LeanCaller(url(server), f"lean-{n}", extra_headers=headers_for(f"lean-{n}"),
                           auth_token=AUTH_TOKEN, keep_heard=True) for n in range(3)]
        pool = LoadPool(sent, tail_s=2.0)
        sim_results, lean_results = await asyncio.wait_for(asyncio.gather(
            asyncio.gather(*(s.run(sent, tail_s=2.0) for s in sims)),
            pool.run(lean, [0.05 * n for n in range(3)])), 60)
    for s, r in zip(sim_results, lean_results, strict=True):
        assert r.error == "" and r.ended_by == s.ended_by == "caller"
        assert r.close_code == s.close_code == 1000
        assert r.bad_messages == s.bad_messages == 0
        # one checkpoint per playAudio, as the simulator got them
        assert r.received["playAudio"] > 0
        assert r.received["playAudio"] - 1 <= r.received["checkpoint"] <= r.received["playAudio"]
        assert r.played_checkpoints > 0 and s.played_checkpoints
        # the whole tone came back (2 s of tail cover the echo's way back on a busy machine)
        assert r.agent_audio_ms >= 950 and s.agent_audio_ms >= 950
        # the tone's 50 ticks came back voiced to both, counted as stream_scaleout.py counts them
        assert r.echoed_ticks >= 48 and echo_figures(s.heard)[0] >= 48
        corr, _ = best_correlation(sent, ulaw_to_pcm(r.heard))
        assert corr > 0.95, corr
        corr_sim, _ = best_correlation(sent, s.heard)
        assert corr_sim > 0.95, corr_sim
    assert len(pool.stats.late_ms) > 0 and pool.stats.cpu_s > 0
