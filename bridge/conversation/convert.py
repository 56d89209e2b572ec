"""TTS audio chunks (any declared encoding and rate) to the leg's 8 kHz s16le, streaming.

The one place on the conversation path that decodes and resamples (DESIGN.md, Adding a
provider): providers yield what their service sends (G.711, PCM at its own rate, MP3) and
declare it on each AudioChunk.
"""

from __future__ import annotations

import av

from bridge.audio.g711 import alaw_to_pcm, ulaw_to_pcm
from bridge.audio.resample import StreamResampler, frames_to_pcm
from bridge.leg import SAMPLE_RATE
from bridge.providers.base import AudioChunk


class _Mp3Decoder:
    """A streaming PyAV MP3 decoder + resampler: frames cut anywhere, no clicks at the edges."""

    def __init__(self) -> None:
        ctx = av.CodecContext.create("mp3", "r")
        assert isinstance(ctx, av.AudioCodecContext)
        self._ctx = ctx
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)

    def push(self, data: bytes | None) -> bytes:
        """The next bytes of the stream (None: the end) -> 8 kHz s16le."""
        try:
            frames = [f for p in self._ctx.parse(data) for f in self._ctx.decode(p)]
            if data is None:
                frames += self._ctx.decode(None)
        except av.FFmpegError as exc:
            raise ValueError(f"undecodable mp3 from the provider: {exc}") from exc
        out = bytearray()
        for frame in frames:
            out += frames_to_pcm(self._resampler.resample(frame))
        if data is None:
            out += frames_to_pcm(self._resampler.resample(None))
        return bytes(out)


class ChunkConverter:
    """One per TTS stream: telephony-native chunks (G.711 or PCM at 8 kHz) pass with a table
    decode at most; other rates go through one stateful resampler, MP3 through one streaming
    decoder (no clicks at chunk edges). ValueError for audio it cannot decode."""

    def __init__(self) -> None:
        self._resampler: StreamResampler | None = None
        self._mp3: _Mp3Decoder | None = None

    def convert(self, chunk: AudioChunk) -> bytes:
        if chunk.encoding == "mp3":
            if self._mp3 is None:
                self._mp3 = _Mp3Decoder()
            return self._mp3.push(chunk.data) if chunk.data else b""
        if chunk.encoding == "ulaw":
            pcm = ulaw_to_pcm(chunk.data)
        elif chunk.encoding == "alaw":
            pcm = alaw_to_pcm(chunk.data)
        else:
            pcm = chunk.data
        rate = chunk.sample_rate if chunk.encoding == "pcm_s16le" else SAMPLE_RATE  # G.711 is 8 kHz
        if self._resampler is None or self._resampler.in_rate != rate:
            # at 8 kHz it only keeps an odd byte for the next chunk
            self._resampler = StreamResampler(rate, SAMPLE_RATE)
        return self._resampler.push(pcm)

    def flush(self) -> bytes:
        out = self._mp3.push(None) if self._mp3 is not None else b""
        return out + (self._resampler.flush() if self._resampler is not None else b"")
