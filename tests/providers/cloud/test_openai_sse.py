"""The raw SSE reading of OpenAI's chat stream (openai_sse.py) follows the SSE spec where the
SDK's decoder does, not just the fake's tidy framing: comment lines, CRLF line ends, an event's
data over several ``data:`` lines; and after ``[DONE]`` the body is read to its end, so the
next reply reuses the connection (the real SDK client makes both requests)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.providers.base import TextDelta
from bridge.providers.llm.openai_chat import OpenAIChat

from .test_openai import HISTORY


def _chunk(text: str) -> dict[str, object]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


@pytest.fixture
async def sse_server() -> AsyncIterator[tuple[str, list[int]]]:
    peers: list[int] = []  # the client's port per request: the same port = a reused connection

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.json()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        peers.append(int(peer[1]) if peer else 0)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        first = json.dumps(_chunk("Hello")).replace(', "model"', ',\r\ndata: "model"')  # 2 data lines
        body = (": keep-alive comment\r\n\r\n"
                f"data: {first}\r\n\r\n"
                "id: 7\r\n"
                f"data:{json.dumps(_chunk(' there'))}\r\n\r\n"  # no space after the colon
                "retry: 1000\r\n\r\n"  # an event without data: dispatched as nothing
                "data: [DONE]\r\n\r\n")
        await resp.write(body.encode())
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    server = TestServer(app, host="127.0.0.1")  # loopback, a free port
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}/v1", peers
    finally:
        await server.close()


async def test_spec_framing_is_read_and_the_connection_is_reused(sse_server: tuple[str, list[int]]) -> None:
    url, peers = sse_server
    llm = OpenAIChat(api_key="sk-test", model="gpt-4o", base_url=url)
    try:
        for _ in range(2):
            async with asyncio.timeout(10):
                events = [e async for e in llm.stream(HISTORY, [])]
            assert events == [TextDelta("Hello"), TextDelta(" there")]
    finally:
        await llm.aclose()
    assert len(peers) == 2 and peers[0] == peers[1]
