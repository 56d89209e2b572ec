"""The provider requests sent on aiohttp (openai_wire.py, elevenlabs_http.py) against what
the SDKs' httpx clients do: no ``~/.netrc`` credentials, no thread hop per request, the
proxy from HTTP(S)_PROXY / ALL_PROXY / NO_PROXY as httpx reads it, and error bodies read to
their end. (aiohttp's own ``trust_env`` read ~/.netrc on every request in the loop's default
executor and ignored ALL_PROXY.)"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.providers.base import Message, ProviderError
from bridge.providers.http_session import env_proxy
from bridge.providers.llm.openai_chat import OpenAIChat
from bridge.providers.tts.elevenlabs_http import ElevenLabsHttpTTS
from devkit.fakes import FakeCloud

HISTORY = [Message("system", "Be brief."), Message("user", "Hello?")]
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
              "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[dict[str, str]], asyncio.Event]]:
    """A loopback OpenAI + ElevenLabs endpoint that records each request's headers."""
    seen: list[dict[str, str]] = []
    arrived = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        seen.append({k.lower(): v for k, v in request.headers.items()})
        arrived.set()
        if request.path.endswith("/chat/completions"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b'data: {"choices":[{"delta":{"content":"Hi."}}]}\n\ndata: [DONE]\n\n')
            await resp.write_eof()
            return resp
        return web.Response(body=b"\xff" * 400, content_type="audio/basic")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield f"http://127.0.0.1:{srv.port}", seen, arrived
    finally:
        await srv.close()


async def _one(text: str) -> AsyncIterator[str]:
    yield text


@pytest.fixture
def netrc_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ~/.netrc with a ``default`` entry (curl, git, pip credentials), as $NETRC."""
    path = tmp_path / "netrc"
    path.write_text("default login someone password s3cret\n")
    path.chmod(0o600)
    monkeypatch.setenv("NETRC", str(path))


async def test_openai_request_ignores_netrc_as_the_sdk_does(
    server: tuple[str, list[dict[str, str]], asyncio.Event], netrc_default: None
) -> None:
    """The SDK path sends its Bearer key whatever ~/.netrc holds; the aiohttp path raised
    ValueError("Cannot combine AUTHORIZATION header with AUTH argument ...") on every request."""
    url, seen, _ = server
    llm = OpenAIChat(api_key="sk-netrc", model="gpt-4o", base_url=f"{url}/v1")
    try:
        async with asyncio.timeout(10):
            events = [e async for e in llm.stream(HISTORY, [])]
    finally:
        await llm.aclose()
    assert len(events) == 1
    assert seen[0]["authorization"] == "Bearer sk-netrc"


async def test_elevenlabs_request_carries_no_netrc_credentials(
    server: tuple[str, list[dict[str, str]], asyncio.Event], netrc_default: None
) -> None:
    """The SDK's httpx client sends no Authorization header; the aiohttp path sent the netrc
    login and password to ElevenLabs as Basic auth."""
    url, seen, _ = server
    tts = ElevenLabsHttpTTS(api_key="el-netrc", voice_id="v1", url=url)
    try:
        async with asyncio.timeout(10):
            _ = [c async for c in tts.synthesize(_one("Hello."))]
    finally:
        await tts.aclose()
    assert seen[0]["xi-api-key"] == "el-netrc"
    assert "authorization" not in seen[0]


async def test_openai_request_does_not_wait_on_the_default_executor(
    server: tuple[str, list[dict[str, str]], asyncio.Event]
) -> None:
    """A request on a pooled connection needs no thread (the SDK's doesn't). The aiohttp path
    hopped to the default executor twice a request (netrc auth, env proxy): behind any
    blocking ``to_thread`` work (Plivo REST calls, retention sweep, create_vad at call start)
    every LLM request and TTS clause of every call waited."""
    url, seen, arrived = server
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
    llm = OpenAIChat(api_key="sk-x", model="gpt-4o", base_url=f"{url}/v1")
    release = threading.Event()
    busy: asyncio.Future[Any] | None = None
    try:
        async with asyncio.timeout(10):
            _ = [e async for e in llm.stream(HISTORY, [])]  # the connection is pooled now
        arrived.clear()
        busy = loop.run_in_executor(None, release.wait)  # the executor's one worker is busy
        reply = asyncio.ensure_future(_drain(llm.stream(HISTORY, [])))
        try:
            # generous: the request reaches the server in ms unless it waits on the worker
            await asyncio.wait_for(arrived.wait(), 5)
        finally:
            release.set()
            await reply
    finally:
        release.set()
        if busy is not None:
            await busy
        await llm.aclose()
    assert len(seen) == 2


async def _drain(events: AsyncIterator[Any]) -> None:
    async with asyncio.timeout(10):
        _ = [e async for e in events]


@pytest.mark.parametrize("retries", [1, 0])  # the SDK path, then ours
async def test_all_proxy_is_honoured_as_httpx_does(
    cloud: FakeCloud, refused_url: str, monkeypatch: pytest.MonkeyPatch, retries: int
) -> None:
    """httpx reads ALL_PROXY (all://); aiohttp's trust_env only http/https/ws/wss: with only
    ALL_PROXY set, the aiohttp path went direct, past a proxy the SDK path uses."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALL_PROXY", refused_url)
    llm = OpenAIChat(api_key=cloud.openai.api_key, model="gpt-4o", base_url=f"{cloud.http_url}/v1",
                     max_retries=retries)
    try:
        with pytest.raises(ProviderError, match="connection failed"):
            async with asyncio.timeout(30):
                _ = [e async for e in llm.stream(HISTORY, [])]
    finally:
        await llm.aclose()
    assert cloud.openai.journal.count("request") == 0


@pytest.fixture
async def slow_refusal() -> AsyncIterator[str]:
    """Refuses every request with the provider's documented quota error, its JSON body sent
    in two writes (TCP segments, TLS records) a moment apart, as any proxy or busy server may."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        if request.path.endswith("/chat/completions"):
            status, body = 429, {"error": {"message": "You exceeded your current quota",
                                           "type": "insufficient_quota", "code": "insufficient_quota",
                                           "param": None}}
        else:
            status, body = 401, {"detail": {"status": "quota_exceeded", "message": "No credits left."}}
        raw = json.dumps(body).encode()
        resp = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
        resp.content_length = len(raw)
        await resp.prepare(request)
        await resp.write(raw[:20])
        await asyncio.sleep(0.2)  # not a timed assertion: only makes the split visible
        await resp.write(raw[20:])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield f"http://127.0.0.1:{srv.port}"
    finally:
        await srv.close()


async def test_openai_error_body_in_two_reads_reads_as_on_the_sdk_path(slow_refusal: str) -> None:
    """``resp.content.read(ERROR_BODY_MAX)`` returns what has arrived, not the body: the
    code "insufficient_quota" was missed and a no-credit 429 became a retryable RateLimitError
    (the SDK path reads the whole body: non-retryable, "check the OpenAI billing")."""
    errors: list[ProviderError] = []
    for retries in (1, 0):  # the SDK path, then ours
        llm = OpenAIChat(api_key="sk-x", model="gpt-4o", base_url=f"{slow_refusal}/v1", max_retries=retries)
        try:
            with pytest.raises(ProviderError) as info:
                async with asyncio.timeout(10):
                    _ = [e async for e in llm.stream(HISTORY, [])]
            errors.append(info.value)
        finally:
            await llm.aclose()
    assert "insufficient quota" in str(errors[0]) and errors[0].retryable is False
    assert (str(errors[1]), errors[1].retryable) == (str(errors[0]), errors[0].retryable)


async def test_elevenlabs_error_body_in_two_reads_keeps_its_detail(slow_refusal: str) -> None:
    """The SDK's ApiError carried the whole body: quota_exceeded read as "quota exceeded"; the
    aiohttp path read the first segment only and called it a bad API key."""
    tts = ElevenLabsHttpTTS(api_key="el-x", voice_id="v1", url=slow_refusal)
    try:
        with pytest.raises(ProviderError) as info:
            async with asyncio.timeout(10):
                _ = [c async for c in tts.synthesize(_one("Hello."))]
    finally:
        await tts.aclose()
    assert "quota exceeded" in str(info.value) and info.value.retryable is False


def test_the_proxy_is_chosen_as_httpx_chooses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    assert env_proxy("https://api.openai.com/v1", "openai") is None
    monkeypatch.setenv("ALL_PROXY", "proxy.internal:3128")  # bare host:port: http
    monkeypatch.setenv("NO_PROXY", "localhost, .corp.example")
    assert env_proxy("https://api.openai.com/v1", "openai") == "http://proxy.internal:3128"
    assert env_proxy("http://localhost:8080/v1", "openai") is None
    assert env_proxy("https://llm.corp.example/v1", "openai") is None
    assert env_proxy("https://corp.example/v1", "openai") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://egress:8080")  # the scheme's own wins over ALL_PROXY
    assert env_proxy("https://api.elevenlabs.io/v1", "elevenlabs") == "http://egress:8080"
    monkeypatch.setenv("NO_PROXY", "*")
    assert env_proxy("https://api.elevenlabs.io/v1", "elevenlabs") is None


def test_a_tls_proxy_is_refused_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp speaks to http:// proxies only: going direct instead would hide the setting."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "https://egress:443")
    with pytest.raises(ProviderError, match="https:// proxy"):
        env_proxy("https://api.openai.com/v1", "openai")
