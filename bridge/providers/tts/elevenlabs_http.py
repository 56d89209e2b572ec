"""ElevenLabs TTS over the HTTP stream endpoint (elevenlabs 2.x ``text_to_speech.stream``).

One request per clause, audio forwarded as bytes arrive (``ulaw_8000`` by default: the call's
own codec, no transcoding). The HTTP client keeps its connection alive between turns and
``warmup()`` opens it ahead of the first turn, so a turn does not pay a TLS handshake.
Closing the output early (barge-in) closes the HTTP response at once. The engine times the
first byte and the stalls; the client keeps only a read-timeout backstop well past them.

The request is the SDK's own (the path, query, JSON body and the SDK client's headers: its
``xi-api-key``, User-Agent and X-Fern headers; pinned by a test against the SDK's request),
sent on aiohttp. Why: httpx/httpcore's pool walks every pooled connection on each request and
release (``is_idle``/``has_expired`` through anyio), O(pool) per request, which at 50
concurrent clauses made ~29 ms of CPU per 3-clause reply (bench/provider_overhead.py --cpu,
profiled); aiohttp keeps a per-host list and parses HTTP in C.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator

import aiohttp
from elevenlabs.client import AsyncElevenLabs

from bridge.providers.base import AudioChunk, ProviderError, backstop_s
from bridge.providers.http_session import client_session, read_capped
from bridge.providers.tts.elevenlabs_audio import NativeAudio, check_output_format
from bridge.providers.tts.elevenlabs_common import detail_status, http_url, status_error
from bridge.settings import Secrets, Settings

NAME = "elevenlabs"
KEEPALIVE_S = 120.0  # the HTTP libraries' default (5 s) would drop the warm connection between turns
POOL_LIMIT = 1000  # one clause in flight per call: sized well past 150 calls
ERROR_BODY_MAX = 65536
# A connection back in the pool this recently is taken as open: warmup() then sends nothing
# (its request would hold that connection, and a greeting asked for meanwhile would open a
# cold one: bench/tts_warmup.py --answer-ms 0 --pool warm). Well inside servers' idle limits.
FRESH_S = 30.0


class ElevenLabsHttpTTS:
    name = NAME

    def __init__(
        self,
        *,
        api_key: str,
        voice_id: str,
        url: str = "",
        model_id: str = "eleven_flash_v2_5",
        output_format: str = "ulaw_8000",
        streaming_latency: int = 3,
        connect_timeout_s: float = 2.0,
        first_byte_timeout_s: float = 2.0,
        read_timeout_s: float = backstop_s(2.0),
    ) -> None:
        check_output_format(output_format)
        self.voice_id = voice_id
        self.model_id = model_id
        self.output_format = output_format
        self.streaming_latency = streaming_latency
        self.first_byte_timeout_s = first_byte_timeout_s  # the warm-up's limit
        base = http_url(url)
        # the SDK client supplies the headers it would send (built once, not per request)
        sdk = AsyncElevenLabs(api_key=api_key, base_url=base)
        self._headers = {k: v for k, v in sdk._client_wrapper.get_headers().items() if isinstance(v, str)}
        query = urllib.parse.urlencode(
            {"optimize_streaming_latency": streaming_latency, "output_format": output_format}
        )
        self._stream_url = f"{base}/v1/text-to-speech/{urllib.parse.quote(voice_id, safe='')}/stream?{query}"
        self._models_url = f"{base}/v1/models"
        # a backstop only: the engine's first-byte and stall deadlines come first
        self._timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout_s, sock_read=read_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._proxy: str | None = None
        self._idle_since: float | None = None  # when the last request left its connection idle

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # built inside the running loop
            # the proxy and TLS set up as the SDK's httpx client does (http_session.py)
            self._session, self._proxy = client_session(
                self._stream_url, NAME, timeout=self._timeout, pool_limit=POOL_LIMIT, keepalive_s=KEEPALIVE_S
            )
        return self._session

    async def warmup(self) -> None:
        """Open (and keep) the HTTPS connection before the first turn needs it."""
        if self._idle_since is not None and time.monotonic() - self._idle_since < FRESH_S:
            return
        try:
            async with asyncio.timeout(self.first_byte_timeout_s):
                # GET /v1/models, as the SDK's models.list() sends it
                http = self._http()
                async with http.get(
                    self._models_url, headers=self._headers, proxy=self._proxy, allow_redirects=False
                ) as resp:
                    body = await resp.read()
                    if resp.status >= 400:
                        raise status_error(NAME, resp.status, detail_status(body))
            self._idle_since = time.monotonic()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProviderError(NAME, f"warm-up failed ({type(exc).__name__})") from None

    async def synthesize(self, text: AsyncIterator[str]) -> AsyncGenerator[AudioChunk, None]:
        async for clause in text:
            if clause.strip():
                async for chunk in self._clause(clause):
                    yield chunk

    async def _clause(self, clause: str) -> AsyncIterator[AudioChunk]:
        native = NativeAudio(self.output_format)
        self._idle_since = None  # until this response is read to its end
        body = json.dumps({"text": clause, "model_id": self.model_id}, ensure_ascii=False,
                          separators=(",", ":")).encode()
        headers = {**self._headers, "Content-Type": "application/json"}
        resp: aiohttp.ClientResponse | None = None
        try:
            try:
                http = self._http()
                # no redirects: the SDK's client follows none, and one would take the key along
                resp = await http.post(
                    self._stream_url, data=body, headers=headers, proxy=self._proxy, allow_redirects=False
                )
                if resp.status >= 400:
                    refusal = await read_capped(resp, ERROR_BODY_MAX)
                    raise status_error(NAME, resp.status, detail_status(refusal))
                # bytes as they arrive (the SDK's chunk_size=None: no re-chunking that would
                # delay the first audio)
                async for data in resp.content.iter_any():
                    chunk = native.chunk(data)
                    if chunk is not None:
                        yield chunk
            except TimeoutError:
                raise ProviderError(NAME, "no audio (read timeout)") from None
            except aiohttp.ClientError as exc:
                raise ProviderError(NAME, f"stream failed ({type(exc).__name__})") from None
            resp.release()  # read to its end: the connection goes back to the pool
            resp = None
            self._idle_since = time.monotonic()
        finally:
            if resp is not None:
                # barge-in or failure: close the response now (the server sees the disconnect)
                resp.close()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def create(settings: Settings, secrets: Secrets) -> ElevenLabsHttpTTS:
    s = settings.tts
    try:
        return ElevenLabsHttpTTS(
            api_key=secrets.require("elevenlabs_api_key"),
            voice_id=s.voice_id,
            url=s.elevenlabs_url,
            model_id=s.model_id,
            output_format=s.output_format,
            streaming_latency=s.elevenlabs_streaming_latency,
            connect_timeout_s=s.connect_timeout_s,
            first_byte_timeout_s=s.first_byte_timeout_s,
            read_timeout_s=backstop_s(s.first_byte_timeout_s, s.stall_timeout_s),
        )
    except ValueError as exc:
        raise ProviderError(NAME, str(exc), retryable=False) from None
