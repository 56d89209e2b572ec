"""FakeCloud: the three fake providers in one aiohttp app on 127.0.0.1 (ephemeral port)."""

from __future__ import annotations

import functools

from aiohttp import web

from devkit.fakes.deepgram import FakeDeepgram
from devkit.fakes.elevenlabs import FakeElevenLabs
from devkit.fakes.elevenlabs_multi import multi_stream_input
from devkit.fakes.flux import FakeFlux
from devkit.fakes.openai import FakeOpenAI

DEEPGRAM_KEY = "dg-test-key-0123456789"
OPENAI_KEY = "sk-test-key-0123456789"
ELEVENLABS_KEY = "el-test-key-0123456789"


class FakeCloud:
    """``async with FakeCloud() as cloud:`` then point the SDKs at ``cloud.http_url``."""

    def __init__(self) -> None:
        self.deepgram = FakeDeepgram(DEEPGRAM_KEY)
        self.flux = FakeFlux(DEEPGRAM_KEY)
        self.openai = FakeOpenAI(OPENAI_KEY)
        self.elevenlabs = FakeElevenLabs(ELEVENLABS_KEY)
        self.app = web.Application()
        self.app.router.add_get("/v1/listen", self.deepgram.handle)
        self.app.router.add_get("/v2/listen", self.flux.handle)
        self.app.router.add_post("/v1/chat/completions", self.openai.handle)
        self.app.router.add_post("/v1/text-to-speech/{voice}/stream", self.elevenlabs.stream)
        self.app.router.add_get("/v1/text-to-speech/{voice}/stream-input", self.elevenlabs.stream_input)
        self.app.router.add_get(
            "/v1/text-to-speech/{voice}/multi-stream-input",
            functools.partial(multi_stream_input, self.elevenlabs),
        )
        self.app.router.add_get("/v1/models", self._models)
        # handler_cancellation: a client that hangs up mid-reply cancels the handler, so the
        # fakes can record the abort even while stalled
        self._runner = web.AppRunner(
            self.app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        self.port = 0

    async def _models(self, request: web.Request) -> web.Response:
        # both APIs serve GET /v1/models on their own hosts; here the key's header tells them
        # apart (ElevenLabs: xi-api-key, OpenAI: Authorization: Bearer)
        if "xi-api-key" in request.headers:
            return await self.elevenlabs.models(request)
        return await self.openai.list_models(request)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> FakeCloud:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
