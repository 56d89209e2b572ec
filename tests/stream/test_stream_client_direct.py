"""The simulated Plivo caller on a path without delay (NetworkProfile.none(), the capacity
bench's callers): messages go straight to the socket instead of through the delayed pipe, and
the caller still plays Plivo's part: start first, media in order, playedStream once the audio
before a checkpoint has played, clearedAudio after clearAudio."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from bridge.audio.g711 import pcm_to_ulaw
from bridge.simulator.plivo.network import NetworkProfile
from bridge.simulator.plivo.stream_client import PlivoStreamClient


def test_a_zero_delay_profile_is_none_and_the_default_is_not() -> None:
    assert NetworkProfile.none().is_none
    assert not NetworkProfile().is_none
    assert not NetworkProfile(0.0, 0.0, 5.0).is_none


async def test_direct_caller_sends_in_order_and_answers_checkpoint_and_clear() -> None:
    got: list[dict[str, Any]] = []

    async def bridge(ws: ServerConnection) -> None:
        agent = pcm_to_ulaw(bytes(320 * 3))  # 60 ms of agent audio, then a checkpoint
        async for raw in ws:
            msg = json.loads(raw)
            got.append(msg)
            if msg["event"] == "media" and msg["media"]["chunk"] == 2:
                await ws.send(json.dumps({"event": "playAudio", "media": {
                    "contentType": "audio/x-mulaw", "sampleRate": 8000,
                    "payload": base64.b64encode(agent).decode()}}))
                await ws.send(json.dumps({"event": "checkpoint", "name": "cp1"}))
            if msg["event"] == "playedStream":
                await ws.send(json.dumps({"event": "clearAudio"}))

    async with serve(bridge, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = PlivoStreamClient(f"ws://127.0.0.1:{port}/stream", network=NetworkProfile.none())
        result = await asyncio.wait_for(client.run(bytes(320 * 15), tail_s=0.2), 10)
    events = [m["event"] for m in got]
    assert events[0] == "start"
    chunks = [m["media"]["chunk"] for m in got if m["event"] == "media"]
    assert chunks == list(range(1, len(chunks) + 1))  # every frame, in order
    seqs = [m["sequenceNumber"] for m in got]
    assert seqs == sorted(seqs)
    assert result.played_checkpoints == ["cp1"]
    assert events.index("playedStream") < events.index("clearedAudio")
    assert result.clears == 1
    assert result.agent_audio_ms == 60
