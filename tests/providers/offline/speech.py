"""Helpers for the offline-engine tests: speak with the real TTS, pass it through a phone line
(G.711 mu-law), feed it to a real STT stream in 20 ms frames."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from bridge.audio import g711
from bridge.conversation.convert import ChunkConverter
from bridge.providers.base import AudioChunk, SttStream, Transcript
from bridge.providers.tts.espeak_tts import EspeakTTS

FRAME_BYTES = 320  # 20 ms at 8 kHz
_SETTLE_TIMEOUT_S = 60.0  # a bound for a stuck test, not a speed assertion
_ROOT = Path(__file__).resolve().parents[3]
_spoken: dict[tuple[str, str, int], bytes] = {}


async def chunks(*texts: str) -> AsyncIterator[str]:
    for text in texts:
        yield text


async def say(text: str, tts: EspeakTTS | None = None) -> bytes:
    """``text`` as 8 kHz s16le from espeak-ng (en-us+klatt, 165 wpm unless ``tts`` says
    otherwise), the same bytes on every run: synthesised once per test process by a fresh
    engine in a child process (see fresh_speech: the in-process engine's output depends on
    everything it spoke before)."""
    voice, rate = (tts.voice, tts.rate_wpm) if tts else ("en-us+klatt", 165)
    key = (text, voice, rate)
    if key not in _spoken:
        argv = [sys.executable, "-m", "tests.providers.offline.fresh_speech", voice, str(rate), text]
        done = await asyncio.to_thread(
            subprocess.run, argv, cwd=_ROOT, capture_output=True, check=True, timeout=_SETTLE_TIMEOUT_S
        )
        _spoken[key] = done.stdout
    return _spoken[key]


async def heard(audio: AsyncIterator[AudioChunk]) -> bytes:
    """A TTS stream as the call plays it: 8 kHz s16le through the conversation's converter."""
    converter = ChunkConverter()
    out = bytearray()
    async for chunk in audio:
        out += converter.convert(chunk)
    return bytes(out + converter.flush())


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
