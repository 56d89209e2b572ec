"""ElevenLabs TTS over the HTTP stream endpoint (elevenlabs 2.x ``text_to_speech.stream``).

One request per clause, audio forwarded as bytes arrive (``ulaw_8000`` by default: the call's
own codec, no transcoding). The HTTP client keeps its connection alive between turns and
``warmup()`` opens it ahead of the first turn, so a turn does not pay a TLS handshake.
Closing the output early (barge-in) closes the HTTP response at once. The engine times the
first byte and the stalls; the client keeps only a read-timeout backstop well past them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import httpx
from elevenlabs.client import AsyncElevenLabs
from elevenlabs.core.api_error import ApiError

from bridge.providers.base import AudioChunk, ProviderError, backstop_s
from bridge.providers.tts.elevenlabs_audio import NativeAudio, check_output_format
from bridge.providers.tts.elevenlabs_common import detail_status, http_url, status_error
from bridge.settings import Secrets, Settings

NAME = "elevenlabs"
KEEPALIVE_S = 120.0  # httpx's default (5 s) would drop the warm connection between turns
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
        # a backstop only: the engine's first-byte and stall deadlines come first
        backstop = read_timeout_s
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(backstop, connect=connect_timeout_s),
            limits=httpx.Limits(max_keepalive_connections=32, keepalive_expiry=KEEPALIVE_S),
        )
        self._client = AsyncElevenLabs(
            api_key=api_key, base_url=http_url(url), timeout=backstop, httpx_client=self._http
        )
        # chunk_size None: hand over bytes as they arrive (the SDK default re-chunks to 1 KiB,
        # 128 ms of ulaw, which would delay the first audio)
        self._options = cast(Any, {"max_retries": 0, "chunk_size": None})
        self._idle_since: float | None = None  # when the last request left its connection idle

    async def warmup(self) -> None:
        """Open (and keep) the HTTPS connection before the first turn needs it."""
        if self._idle_since is not None and time.monotonic() - self._idle_since < FRESH_S:
            return
        try:
            async with asyncio.timeout(self.first_byte_timeout_s):
                await self._client.models.list(request_options=self._options)
            self._idle_since = time.monotonic()
        except ApiError as exc:
            raise status_error(NAME, exc.status_code or 0, detail_status(exc.body)) from None
        except (TimeoutError, httpx.HTTPError) as exc:
            raise ProviderError(NAME, f"warm-up failed ({type(exc).__name__})") from None

    async def synthesize(self, text: AsyncIterator[str]) -> AsyncGenerator[AudioChunk, None]:
        async for clause in text:
            if clause.strip():
                async for chunk in self._clause(clause):
                    yield chunk

    async def _clause(self, clause: str) -> AsyncIterator[AudioChunk]:
        native = NativeAudio(self.output_format)
        self._idle_since = None  # until this response is read to its end
        audio = self._client.text_to_speech.stream(
            voice_id=self.voice_id,
            text=clause,
            model_id=self.model_id,
            output_format=cast(Any, self.output_format),
            optimize_streaming_latency=self.streaming_latency,
            request_options=self._options,
        )
        try:
            while True:
                try:
                    chunk = native.chunk(await anext(audio))
                except StopAsyncIteration:
                    break
                except httpx.TimeoutException:
                    raise ProviderError(NAME, "no audio (read timeout)") from None
                except ApiError as exc:
                    raise status_error(NAME, exc.status_code or 0, detail_status(exc.body)) from None
                except httpx.HTTPError as exc:
                    raise ProviderError(NAME, f"stream failed ({type(exc).__name__})") from None
                if chunk is not None:
                    yield chunk
            self._idle_since = time.monotonic()
        finally:
            # barge-in or failure: close the response now (the server sees the disconnect)
            with contextlib.suppress(Exception):
                await audio.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()


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
