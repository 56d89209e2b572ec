"""The fake multi-context WebSocket against a plain aiohttp client: what the documentation says
(both context-id spellings, the 5-context limit counting closed contexts until their isFinal,
close_socket, the idle timeout on the socket or on the context), not what our client sends."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession, ClientWebSocketResponse, WSMsgType, WSServerHandshakeError

from devkit.fakes import FakeCloud
from devkit.fakes.server import ELEVENLABS_KEY
from devkit.fakes.tone import ToneSource

QUERY = "model_id=m&output_format=ulaw_8000"
KEY = {"xi-api-key": ELEVENLABS_KEY}


def _url(cloud: FakeCloud, query: str = QUERY) -> str:
    return f"{cloud.http_url}/v1/text-to-speech/v1/multi-stream-input?{query}"


async def _messages(ws: ClientWebSocketResponse) -> AsyncIterator[dict[str, Any]]:
    """Server messages until the socket closes (bounded)."""
    async with asyncio.timeout(5):
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                yield json.loads(msg.data)


async def _until_final(ws: ClientWebSocketResponse, finals: int) -> tuple[dict[str, bytes], list[str]]:
    audio: dict[str, bytes] = {}
    final: list[str] = []
    async for message in _messages(ws):
        if message.get("audio"):
            cid = message["contextId"]
            audio[cid] = audio.get(cid, b"") + base64.b64decode(message["audio"])
        if message.get("isFinal"):
            final.append(message["contextId"])
            if len(final) == finals:
                break
    return audio, final


async def test_both_context_id_spellings_are_accepted(cloud: FakeCloud) -> None:
    async with ClientSession() as http, http.ws_connect(_url(cloud), headers=KEY) as ws:
        await ws.send_json({"text": " ", "context_id": "snake"})
        await ws.send_json({"text": " ", "contextId": "camel"})
        await ws.send_json({"text": "One two. ", "context_id": "snake", "flush": True})
        await ws.send_json({"text": "Three. ", "contextId": "camel", "flush": True})
        await ws.send_json({"context_id": "snake", "close_context": True})
        await ws.send_json({"contextId": "camel", "close_context": True})
        audio, final = await _until_final(ws, 2)
    assert sorted(final) == ["camel", "snake"]
    assert audio == {"snake": ToneSource("ulaw_8000").encode("One two. "),
                     "camel": ToneSource("ulaw_8000").encode("Three. ")}


async def test_a_sixth_live_context_is_refused_and_the_socket_closed_1008(cloud: FakeCloud) -> None:
    """A closed context still counts until its isFinal (its flushed audio is still to come)."""
    cloud.elevenlabs.ws_faults.first_byte_delay_s = 5.0  # the flushed audio is far off
    async with ClientSession() as http, http.ws_connect(_url(cloud), headers=KEY) as ws:
        for i in range(5):
            await ws.send_json({"text": " ", "context_id": f"c{i}"})
            await ws.send_json({"text": "Hello. ", "context_id": f"c{i}", "flush": True})
        await ws.send_json({"context_id": "c0", "close_context": True})  # isFinal not yet sent
        await ws.send_json({"text": " ", "context_id": "c5"})
        frames = [m async for m in _messages(ws)]
    assert frames == [{"message": frames[0]["message"], "error": "max_active_conversations", "code": 1008}]
    assert "(5)" in frames[0]["message"]
    assert ws.close_code == 1008


async def test_close_context_drops_unflushed_text_and_reuses_the_id(cloud: FakeCloud) -> None:
    async with ClientSession() as http, http.ws_connect(_url(cloud), headers=KEY) as ws:
        await ws.send_json({"text": " ", "context_id": "a"})
        await ws.send_json({"text": "Spoken. ", "context_id": "a", "flush": True})
        await ws.send_json({"text": "Never flushed ", "context_id": "a"})
        await ws.send_json({"context_id": "a", "close_context": True})
        audio, final = await _until_final(ws, 1)
        assert audio == {"a": ToneSource("ulaw_8000").encode("Spoken. ")} and final == ["a"]
        await ws.send_json({"text": " ", "context_id": "a"})  # a new context under the old id
        await ws.send_json({"text": "Again. ", "context_id": "a", "flush": True})
        await ws.send_json({"context_id": "a", "close_context": True})
        audio, final = await _until_final(ws, 1)
    assert audio == {"a": ToneSource("ulaw_8000").encode("Again. ")}


async def test_close_socket_flushes_every_context_then_closes(cloud: FakeCloud) -> None:
    async with ClientSession() as http, http.ws_connect(_url(cloud), headers=KEY) as ws:
        for cid in ("x", "y"):
            await ws.send_json({"text": " ", "context_id": cid})
            await ws.send_json({"text": f"Context {cid}. ", "context_id": cid, "flush": True})
        await ws.send_json({"close_socket": True})
        messages = [m async for m in _messages(ws)]
    finals = sorted(m["contextId"] for m in messages if m.get("isFinal"))
    assert finals == ["x", "y"] and messages[-1].get("isFinal")
    assert ws.closed and ws.close_code == 1000


async def test_idle_socket_is_closed_1008_by_default(cloud: FakeCloud) -> None:
    cloud.elevenlabs.timeout_scale = 0.01  # 20 s (the documented default) -> 0.2 s
    async with ClientSession() as http, http.ws_connect(_url(cloud), headers=KEY) as ws:
        frames = [m async for m in _messages(ws)]
    assert [f["error"] for f in frames] == ["input_timeout_exceeded"]
    assert "0.2 seconds" in frames[0]["message"]
    assert ws.close_code == 1008


async def test_idle_context_is_closed_when_the_timeout_is_per_context(cloud: FakeCloud) -> None:
    cloud.elevenlabs.multi_idle_closes = "context"
    cloud.elevenlabs.timeout_scale = 0.002  # inactivity_timeout=100 -> 0.2 s
    url = _url(cloud, QUERY + "&inactivity_timeout=100")
    async with ClientSession() as http, http.ws_connect(url, headers=KEY) as ws:
        await ws.send_json({"text": " ", "context_id": "idle"})
        _audio, final = await _until_final(ws, 1)  # closed by the server, nothing said
        assert final == ["idle"]
        # the socket stays: a new context still works
        await ws.send_json({"text": " ", "context_id": "next"})
        await ws.send_json({"text": "Still here. ", "context_id": "next", "flush": True})
        await ws.send_json({"context_id": "next", "close_context": True})
        audio, final = await _until_final(ws, 1)
    assert final == ["next"] and audio["next"] == ToneSource("ulaw_8000").encode("Still here. ")
    assert [e.data["context"] for e in cloud.elevenlabs.journal.of("context_timeout")] == ["idle"]


@pytest.mark.parametrize(("key", "status"), [("wrong", 401), (ELEVENLABS_KEY, 0)])
async def test_same_auth_check_as_stream_input(cloud: FakeCloud, key: str, status: int) -> None:
    async with ClientSession() as http:
        if status:
            with pytest.raises(WSServerHandshakeError) as info:
                await http.ws_connect(_url(cloud), headers={"xi-api-key": key})
            assert info.value.status == status
        else:
            async with http.ws_connect(_url(cloud), headers={"xi-api-key": key}) as ws:
                await ws.send_json({"close_socket": True})
                assert [m async for m in _messages(ws)] == []
    request = cloud.elevenlabs.journal.of("request" if not status else "rejected")
    assert len(request) == 1


async def test_a_flush_with_empty_text_flushes_the_buffer(cloud: FakeCloud) -> None:
    # the SDK's FlushContext is {context_id, text, flush}; text may be "" (not a keep-alive)
    async with ClientSession() as http, http.ws_connect(_url(cloud), headers=KEY) as ws:
        await ws.send_json({"text": " ", "context_id": "a"})
        await ws.send_json({"text": "Buffered text. ", "context_id": "a"})
        await ws.send_json({"text": "", "context_id": "a", "flush": True})
        await ws.send_json({"context_id": "a", "close_context": True})
        audio, final = await _until_final(ws, 1)
    assert final == ["a"] and audio == {"a": ToneSource("ulaw_8000").encode("Buffered text. ")}


async def test_a_reused_id_leaves_the_closing_context_counted(cloud: FakeCloud) -> None:
    """A closed context counts until its isFinal, also when its id was opened again."""
    cloud.elevenlabs.ws_faults.first_byte_delay_s = 30.0  # no isFinal during the test
    async with ClientSession() as http, http.ws_connect(_url(cloud), headers=KEY) as ws:
        for i in range(4):
            await ws.send_json({"text": " ", "context_id": f"c{i}"})
            await ws.send_json({"text": "Hello. ", "context_id": f"c{i}", "flush": True})
        await ws.send_json({"context_id": "c0", "close_context": True})  # isFinal not yet sent
        await ws.send_json({"text": " ", "context_id": "c0"})  # the 5th, under an old id
        await ws.send_json({"text": " ", "context_id": "c4"})  # the 6th
        frames = [m async for m in _messages(ws)]
    assert [f.get("error") for f in frames] == ["max_active_conversations"]
    assert ws.close_code == 1008
