"""The ElevenLabs HTTP client sends the SDK's own requests on aiohttp: ``text_to_speech.stream``
for a clause and ``models.list`` for the warm-up, the same method, path, query, headers and
JSON body as the SDK (both captured by one loopback server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from elevenlabs.client import AsyncElevenLabs

from bridge.providers.base import ProviderError
from bridge.providers.tts.elevenlabs_http import ElevenLabsHttpTTS

VOICE = "21m00Tcm4TlvDq8ikWAM"  # ElevenLabs' voice ids: letters and digits
TRANSPORT_HEADERS = {"host", "content-length", "accept-encoding", "connection"}


@pytest.fixture
async def capture() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        seen.append({"method": request.method, "path_qs": request.path_qs,
                     "headers": {k.lower(): v for k, v in request.headers.items()
                                 if k.lower() not in TRANSPORT_HEADERS},
                     "json": await request.json() if raw else None})
        if request.method == "GET":
            return web.json_response([])
        return web.Response(body=b"\xff" * 800, content_type="audio/basic")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}", seen
    finally:
        await server.close()


async def _one(text: str) -> AsyncIterator[str]:
    yield text


@pytest.mark.parametrize("fmt", ["ulaw_8000", "pcm_16000"])
async def test_the_stream_request_is_the_sdks_own(
    capture: tuple[str, list[dict[str, Any]]], fmt: str
) -> None:
    url, seen = capture
    sdk = AsyncElevenLabs(api_key="el-pin-key", base_url=url)
    ours = ElevenLabsHttpTTS(api_key="el-pin-key", voice_id=VOICE, url=url, output_format=fmt,
                             model_id="eleven_turbo_v2_5", streaming_latency=2)
    text = "Héllo, we are open from nine."  # not ASCII: the body's encoding too
    try:
        async with asyncio.timeout(10):
            _ = [c async for c in sdk.text_to_speech.stream(
                voice_id=VOICE, text=text, model_id="eleven_turbo_v2_5", output_format=fmt,  # type: ignore[arg-type]
                optimize_streaming_latency=2, request_options={"max_retries": 0, "chunk_size": None})]
            chunks = [c async for c in ours.synthesize(_one(text))]
    finally:
        await ours.aclose()
    assert b"".join(c.data for c in chunks) == b"\xff" * 800
    assert len(seen) == 2
    assert seen[1] == seen[0]
    assert seen[1]["headers"]["xi-api-key"] == "el-pin-key"
    assert seen[1]["json"] == {"text": text, "model_id": "eleven_turbo_v2_5"}


async def test_the_warm_up_request_is_the_sdks_models_list(capture: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = capture
    sdk = AsyncElevenLabs(api_key="el-pin-key", base_url=url)
    ours = ElevenLabsHttpTTS(api_key="el-pin-key", voice_id=VOICE, url=url)
    try:
        async with asyncio.timeout(10):
            await sdk.models.list(request_options={"max_retries": 0})
            await ours.warmup()
    finally:
        await ours.aclose()
    assert len(seen) == 2 and seen[0]["method"] == "GET"
    assert seen[1] == seen[0]


async def test_a_proxy_set_in_the_environment_is_used(
    capture: tuple[str, list[dict[str, Any]]], refused_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the SDK's httpx client (trust_env): HTTP_PROXY carries the request; one that
    refuses means nothing reaches the server."""
    url, seen = capture
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
                 "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", refused_url)
    ours = ElevenLabsHttpTTS(api_key="el-pin-key", voice_id=VOICE, url=url)
    try:
        with pytest.raises(ProviderError, match="stream failed"):
            async with asyncio.timeout(30):
                _ = [c async for c in ours.synthesize(_one("Hello."))]
    finally:
        await ours.aclose()
    assert seen == []
