"""TTS audio chunks (any declared encoding and rate) to the leg's 8 kHz s16le, streaming."""

from __future__ import annotations

from bridge.audio.g711 import alaw_to_pcm, ulaw_to_pcm
from bridge.audio.resample import StreamResampler
from bridge.leg import SAMPLE_RATE
from bridge.providers.base import AudioChunk


class ChunkConverter:
    """One per TTS stream: telephony-native chunks pass straight through; other rates go
    through one stateful resampler (no clicks at chunk edges)."""

    def __init__(self) -> None:
        self._resampler: StreamResampler | None = None
        self._carry = b""

    def convert(self, chunk: AudioChunk) -> bytes:
        if chunk.encoding == "ulaw":
            pcm = ulaw_to_pcm(chunk.data)
        elif chunk.encoding == "alaw":
            pcm = alaw_to_pcm(chunk.data)
        else:
            data = self._carry + chunk.data
            usable = len(data) & ~1
            pcm, self._carry = data[:usable], data[usable:]
        if chunk.sample_rate == SAMPLE_RATE:
            return pcm
        if self._resampler is None or self._resampler.in_rate != chunk.sample_rate:
            self._resampler = StreamResampler(chunk.sample_rate, SAMPLE_RATE)
        return self._resampler.push(pcm)

    def flush(self) -> bytes:
        return self._resampler.flush() if self._resampler is not None else b""
