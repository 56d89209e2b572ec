"""ElevenLabs output formats -> the engine's 8 kHz AudioChunks, streaming.

``ulaw_8000``/``alaw_8000``/``pcm_8000`` pass through untouched (telephony-native: nothing to
do on the hot path). ``pcm_<rate>`` goes through one stateful resampler per utterance and
``mp3_*`` through a streaming PyAV decoder + resampler, so chunk edges add no clicks.
"""

from __future__ import annotations

from typing import Literal

import av

from bridge.audio.resample import StreamResampler, frames_to_pcm
from bridge.providers.base import AudioChunk

OUT_RATE = 8000
PCM_RATES = {8000, 16000, 22050, 24000, 44100, 48000}
MP3_RATES = {22050, 44100}


def check_output_format(fmt: str) -> tuple[str, int]:
    """(codec, rate) of a supported format; ValueError naming the supported ones otherwise."""
    parts = fmt.split("_")
    codec = parts[0]
    rate = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    ok = (
        (codec in {"ulaw", "alaw"} and rate == OUT_RATE and len(parts) == 2)
        or (codec == "pcm" and rate in PCM_RATES and len(parts) == 2)
        or (codec == "mp3" and rate in MP3_RATES and len(parts) == 3)
    )
    if not ok:
        raise ValueError(
            f"unsupported ElevenLabs output_format {fmt!r}: use ulaw_8000 or alaw_8000 (no transcoding), "
            "pcm_8000..pcm_48000 or mp3_<22050|44100>_<kbps>"
        )
    return codec, rate


class AudioNormalizer:
    """One per utterance stream: ``push()`` vendor bytes, ``flush()`` at the end."""

    def __init__(self, output_format: str) -> None:
        self.codec, self.rate = check_output_format(output_format)
        self._resampler = StreamResampler(self.rate, OUT_RATE) if self.codec == "pcm" else None
        self._mp3: av.AudioCodecContext | None = None
        self._mp3_resampler: av.AudioResampler | None = None
        if self.codec == "mp3":
            ctx = av.CodecContext.create("mp3", "r")
            assert isinstance(ctx, av.AudioCodecContext)
            self._mp3 = ctx
            self._mp3_resampler = av.AudioResampler(format="s16", layout="mono", rate=OUT_RATE)

    def push(self, data: bytes) -> AudioChunk | None:
        if not data:
            return None
        if self.codec in {"ulaw", "alaw"}:
            encoding: Literal["ulaw", "alaw"] = "ulaw" if self.codec == "ulaw" else "alaw"
            return AudioChunk(data, encoding, OUT_RATE)
        if self._resampler is not None:
            return _pcm(self._resampler.push(data))
        return _pcm(self._decode(data))

    def flush(self) -> AudioChunk | None:
        if self._resampler is not None:
            return _pcm(self._resampler.flush())
        if self._mp3 is not None:
            return _pcm(self._decode(None))
        return None

    def _decode(self, data: bytes | None) -> bytes:
        assert self._mp3 is not None and self._mp3_resampler is not None
        out = bytearray()
        try:
            packets = self._mp3.parse(data)
            frames = [f for p in packets for f in self._mp3.decode(p)]
            if data is None:
                frames += self._mp3.decode(None)
        except av.FFmpegError as exc:
            raise ValueError(f"undecodable mp3 from the provider: {exc}") from exc
        for frame in frames:
            out += frames_to_pcm(self._mp3_resampler.resample(frame))
        if data is None:
            out += frames_to_pcm(self._mp3_resampler.resample(None))
        return bytes(out)


def _pcm(data: bytes) -> AudioChunk | None:
    return AudioChunk(data, "pcm_s16le", OUT_RATE) if data else None
