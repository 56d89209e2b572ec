"""The fallback line ("Sorry, I'm having trouble..."), synthesised once at start-up, so it can
be played within a frame when a provider fails, even when that provider is the TTS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import numpy as np

from bridge.conversation.convert import ChunkConverter
from bridge.leg import SAMPLE_RATE
from bridge.providers.base import TTS

log = logging.getLogger(__name__)

_TIMEOUT_S = 15.0


async def _one(text: str) -> AsyncIterator[str]:
    yield text


async def _synthesize(tts: TTS, text: str) -> bytes:
    converter = ChunkConverter()
    out = bytearray()
    stream = tts.synthesize(_one(text))
    try:
        async for chunk in stream:
            out += converter.convert(chunk)
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    out += converter.flush()
    return bytes(out)


def beeps() -> bytes:
    """Two short 440 Hz beeps: what plays when no TTS could say the line (still not dead air)."""
    t = np.arange(int(0.25 * SAMPLE_RATE)) / SAMPLE_RATE
    beep = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    gap = bytes(int(0.15 * SAMPLE_RATE) * 2)
    return beep + gap + beep


async def presynthesize(tts: list[TTS], text: str) -> bytes:
    """``text`` as 8 kHz s16le PCM from the first TTS that manages it; beeps if none does."""
    if not text.strip():
        return b""
    for engine in tts:
        try:
            pcm = await asyncio.wait_for(_synthesize(engine, text), _TIMEOUT_S)
        except Exception as exc:  # any failure: try the next engine
            log.warning("fallback line: %s failed: %s", getattr(engine, "name", engine), exc)
            continue
        if pcm:
            return pcm
    log.error("fallback line: no TTS could synthesise it; beeps will play instead")
    return beeps()
