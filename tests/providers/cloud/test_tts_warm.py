"""tts.warmup_on_call: the first TTS's connection is opened as the call starts, best effort."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from bridge.providers.tts import warm
from bridge.providers.tts.elevenlabs_http import ElevenLabsHttpTTS
from devkit.fakes import FakeCloud
from devkit.fakes.server import ELEVENLABS_KEY


async def _settled() -> None:
    await asyncio.gather(*list(warm._running))  # the warm-ups started so far


async def test_warm_on_call_opens_the_first_tts_connection(cloud: FakeCloud) -> None:
    first = ElevenLabsHttpTTS(api_key=ELEVENLABS_KEY, voice_id="v", url=cloud.http_url)
    second = ElevenLabsHttpTTS(api_key=ELEVENLABS_KEY, voice_id="v", url=cloud.http_url)
    warm.warm_on_call([first, second], enabled=True)
    await asyncio.wait_for(_settled(), 10)
    assert cloud.elevenlabs.journal.count("warmup") == 1  # the first provider only
    warm.warm_on_call([first], enabled=False)
    warm.warm_on_call([object()], enabled=True)  # no warmup(): nothing to do
    await asyncio.wait_for(_settled(), 10)
    assert cloud.elevenlabs.journal.count("warmup") == 1
    await first.aclose()
    await second.aclose()


async def test_a_failed_warm_up_is_only_logged(cloud: FakeCloud) -> None:
    cloud.elevenlabs.faults.status = 503
    tts = ElevenLabsHttpTTS(api_key=ELEVENLABS_KEY, voice_id="v", url=cloud.http_url)
    warm.warm_on_call([tts], enabled=True)
    await asyncio.wait_for(_settled(), 10)  # no exception escapes the task
    await tts.aclose()


async def _one_clause() -> AsyncIterator[str]:
    yield "Hello."


async def test_http_warm_up_leaves_a_connection_just_used_to_the_greeting(cloud: FakeCloud) -> None:
    """Its request would take the open connection, and the greeting asked for meanwhile would
    open a cold one: a warm-up right after a completed request sends nothing."""
    tts = ElevenLabsHttpTTS(api_key=ELEVENLABS_KEY, voice_id="v", url=cloud.http_url)
    try:
        await tts.warmup()  # a new client: the warm-up opens the connection
        assert cloud.elevenlabs.journal.count("warmup") == 1
        await tts.warmup()
        async for _ in tts.synthesize(_one_clause()):
            pass
        await tts.warmup()
        assert cloud.elevenlabs.journal.count("warmup") == 1
    finally:
        await tts.aclose()
