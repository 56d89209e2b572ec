"""openai_wire.py sends the SDK's own request on aiohttp: the same method, URL, headers and JSON
body as ``AsyncOpenAI.chat.completions.create`` for the same parameters (both captured by one
loopback server), and a refused request reads as the SDK path's error."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.providers.base import Message, ProviderError, ToolCall, ToolSpec
from bridge.providers.llm.openai_chat import OpenAIChat, is_reasoning_model, to_wire, tools_to_wire
from bridge.providers.llm.openai_errors import map_error
from bridge.providers.llm.openai_sse import open_chat_stream
from devkit.fakes import FakeCloud

from .conftest import assert_clean
from .test_openai import HISTORY

# set by the HTTP library, not by the SDK: how each one frames the same request
TRANSPORT_HEADERS = {"host", "content-length", "accept-encoding", "connection"}
READ_S = 5.5
TOOL = ToolSpec("lookup", "Find an order", {"type": "object", "properties": {"id": {"type": "integer"}}})


@pytest.fixture
async def capture() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append({"method": request.method, "path": request.path, "query": request.query_string,
                     "headers": {k.lower(): v for k, v in request.headers.items()},
                     "body": await request.json()})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}/v1", seen
    finally:
        await server.close()


async def _both(url: str, seen: list[dict[str, Any]], model: str, messages: list[Message],
                tools: list[ToolSpec]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the SDK's request, ours): the SDK's plain ``chat.completions.create(stream=True)`` with
    these messages and tools, and OpenAIChat.stream() with them."""
    sdk = openai.AsyncOpenAI(api_key="sk-pin-0123", base_url=url, max_retries=0,
                             timeout=openai.Timeout(READ_S, connect=2.0))
    ours = OpenAIChat(api_key="sk-pin-0123", model=model, base_url=url, max_tokens=120, read_timeout_s=READ_S)
    limit: dict[str, Any] = {"max_completion_tokens": 120} if is_reasoning_model(model) else {
        "max_tokens": 120, "temperature": 0.6}
    try:
        async with asyncio.timeout(10):
            stream = await sdk.chat.completions.create(
                model=model, messages=to_wire(messages), tools=tools_to_wire(tools) or openai.omit,  # type: ignore[arg-type]
                stream=True, **limit)
            _ = [c async for c in stream]
            assert [e async for e in ours.stream(messages, tools)] == []
    finally:
        await ours.aclose()
        await sdk.close()
    assert len(seen) == 2
    return seen[0], seen[1]


@pytest.mark.parametrize("model", ["gpt-4o", "o3-mini"])
async def test_the_request_is_the_sdks_own(capture: tuple[str, list[dict[str, Any]]], model: str) -> None:
    url, seen = capture
    call = ToolCall("call_1", "lookup", {"id": 7})
    history = [*HISTORY, Message("assistant", "", tool_calls=(call,)),
               Message("tool", '{"ok": true}', "call_1")]
    sdk, ours = await _both(url, seen, model, history, [TOOL])
    assert (ours["method"], ours["path"], ours["query"]) == (sdk["method"], sdk["path"], sdk["query"])
    assert ours["body"] == sdk["body"]
    assert ours["body"]["stream"] is True and ours["body"]["tools"][0]["function"]["name"] == "lookup"
    strip = TRANSPORT_HEADERS
    assert {k: v for k, v in ours["headers"].items() if k not in strip} == {
        k: v for k, v in sdk["headers"].items() if k not in strip
    }
    assert ours["headers"]["authorization"] == "Bearer sk-pin-0123"
    assert ours["headers"]["user-agent"].startswith("AsyncOpenAI/Python")


async def test_organization_and_project_headers_follow_the_sdk(
    capture: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK reads OPENAI_ORG_ID / OPENAI_PROJECT_ID; the headers it derives go out as they are."""
    monkeypatch.setenv("OPENAI_ORG_ID", "org-123")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-456")
    url, seen = capture
    sdk, ours = await _both(url, seen, "gpt-4o", HISTORY, [])
    assert ours["headers"]["openai-organization"] == sdk["headers"]["openai-organization"] == "org-123"
    assert ours["headers"]["openai-project"] == sdk["headers"]["openai-project"] == "proj-456"


@pytest.mark.parametrize(("status", "quota"), [(400, False), (401, False), (403, False), (404, False),
                                               (409, False), (422, False), (429, False), (429, True),
                                               (500, False), (503, False), (418, False)])
async def test_a_refused_request_reads_as_on_the_sdk_path(status: int, quota: bool) -> None:
    body = {"error": {"message": "no", "type": "x",
                      "code": "insufficient_quota" if quota else "some_code", "param": None}}

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}/v1"
    client = openai.AsyncOpenAI(api_key="sk-x", base_url=url, max_retries=0)
    llm = OpenAIChat(api_key="sk-x", model="gpt-4o", base_url=url)
    try:
        with pytest.raises(openai.APIStatusError) as sdk_info:
            await open_chat_stream(client, {"model": "gpt-4o", "messages": [], "stream": True})
        with pytest.raises(ProviderError) as ours_info:
            async with asyncio.timeout(10):
                _ = [e async for e in llm.stream(HISTORY, [])]
    finally:
        await llm.aclose()
        await client.close()
        await server.close()
    expected = map_error(sdk_info.value)
    assert str(ours_info.value) == str(expected) and ours_info.value.retryable == expected.retryable
    assert_clean(ours_info.value)


async def test_connections_are_reused_across_replies(cloud: FakeCloud) -> None:
    llm = OpenAIChat(api_key=cloud.openai.api_key, model="gpt-4o", base_url=f"{cloud.http_url}/v1")
    try:
        for _ in range(3):
            cloud.openai.script.append("One two.")
            async with asyncio.timeout(10), contextlib.aclosing(llm.stream(HISTORY, [])) as events:
                _ = [e async for e in events]
    finally:
        await llm.aclose()
    peers = {e.data["peer"] for e in cloud.openai.journal.of("request")}
    assert len(peers) == 1


async def test_in_stream_error_event_reads_as_on_the_sdk_path(cloud: FakeCloud) -> None:
    cloud.openai.script.extend(["one two three four", "one two three four"])
    cloud.openai.stream_error_after = 3
    errors = []
    for retries in (1, 0):  # the SDK path, then ours
        llm = OpenAIChat(api_key=cloud.openai.api_key, model="gpt-4o", base_url=f"{cloud.http_url}/v1",
                         max_retries=retries)
        try:
            with pytest.raises(ProviderError) as info:
                async with asyncio.timeout(10):
                    _ = [e async for e in llm.stream(HISTORY, [])]
            errors.append(str(info.value))
        finally:
            await llm.aclose()
    assert errors[0] == errors[1] and "stream error" in errors[1]


PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
              "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.mark.parametrize("retries", [1, 0])  # the SDK path, then ours
async def test_a_proxy_set_in_the_environment_is_used_on_both_paths(
    cloud: FakeCloud, refused_url: str, monkeypatch: pytest.MonkeyPatch, retries: int
) -> None:
    """The SDK's client honours HTTP_PROXY (httpx trust_env); so does ours: a proxy that
    refuses means no request reaches the server."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", refused_url)
    llm = OpenAIChat(api_key=cloud.openai.api_key, model="gpt-4o", base_url=f"{cloud.http_url}/v1",
                     max_retries=retries)
    try:
        with pytest.raises(ProviderError, match="connection failed"):
            async with asyncio.timeout(30):
                _ = [e async for e in llm.stream(HISTORY, [])]
    finally:
        await llm.aclose()
    assert cloud.openai.journal.count("request") == 0
