"""Helpers for the offline-engine tests: speak with the real TTS, pass it through a phone line
(G.711 mu-law), feed it to a real STT stream in 20 ms frames."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from bridge.audio import g711
from bridge.providers.base import SttStream, Transcript
from bridge.providers.tts.espeak_tts import EspeakTTS

FRAME_BYTES = 320  # 20 ms at 8 kHz
_SETTLE_TIMEOUT_S = 60.0  # a bound for a stuck test, not a speed assertion


async def chunks(*texts: str) -> AsyncIterator[str]:
    for text in texts:
        yield text


async def say(text: str, tts: EspeakTTS | None = None) -> bytes:
    """``text`` as 8 kHz s16le, from the in-process espeak TTS (en-us+klatt, 165 wpm)."""
    tts = tts or EspeakTTS("en-us+klatt", 165)
    return b"".join([c.data async for c in tts.synthesize(chunks(text))])


def phone_line(pcm: bytes, lead_ms: int = 200, tail_ms: int = 300) -> bytes:
    """Silence around the speech (as a VAD-cut turn has) and a mu-law round trip."""
    padded = bytes(16 * lead_ms) + pcm + bytes(16 * tail_ms)
    return g711.ulaw_to_pcm(g711.pcm_to_ulaw(padded))


async def send_frames(stream: SttStream, pcm: bytes) -> None:
    for i in range(0, len(pcm), FRAME_BYTES):
        await stream.send(pcm[i : i + FRAME_BYTES])


async def next_final(results: AsyncIterator[Transcript], seen: list[Transcript]) -> Transcript:
    """Collect transcripts into ``seen`` up to and including the next final."""

    async def run() -> Transcript:
        async for t in results:
            seen.append(t)
            if t.is_final:
                return t
        raise AssertionError("transcript stream ended without a final")

    return await asyncio.wait_for(run(), _SETTLE_TIMEOUT_S)


async def transcribe(stream: SttStream, pcm: bytes) -> tuple[Transcript, list[Transcript]]:
    """Send a whole turn, finalize, and return (the final, every transcript seen)."""
    results = aiter(stream.transcripts())
    await send_frames(stream, pcm)
    await stream.finalize()
    seen: list[Transcript] = []
    final = await next_final(results, seen)
    return final, seen


def rms(pcm: bytes) -> float:
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
