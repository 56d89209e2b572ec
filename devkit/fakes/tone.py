"""Synthetic "speech" for the fake TTS: a phase-continuous sine in any ElevenLabs output format.

Phase continuity across chunks and clauses lets tests check that the bridge's decoding and
resampling add no clicks at chunk edges (a clean tone must stay clean).
"""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np

from bridge.audio.g711 import pcm_to_alaw, pcm_to_ulaw

TONE_HZ = 440.0
AMPLITUDE = 8000
MS_PER_CHAR = 30  # audio length the fake "speaks" per character of text


class ToneSource:
    """One per synthesis stream: keeps the sine's phase between calls."""

    def __init__(self, output_format: str) -> None:
        parts = output_format.split("_")
        self.codec = parts[0]
        if self.codec not in {"ulaw", "alaw", "pcm", "mp3"} or len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(f"unsupported output_format {output_format!r}")
        self.rate = int(parts[1])
        self._phase = 0.0

    def pcm(self, seconds: float) -> np.ndarray:
        n = round(seconds * self.rate)
        step = 2 * math.pi * TONE_HZ / self.rate
        phases = self._phase + step * np.arange(n)
        self._phase = (self._phase + step * n) % (2 * math.pi)
        return (AMPLITUDE * np.sin(phases)).astype("<i2")

    def encode(self, text: str) -> bytes:
        """The audio for `text`, in the stream's output format (mp3: a whole encoded clip)."""
        samples = self.pcm(len(text) * MS_PER_CHAR / 1000)
        raw = samples.tobytes()
        if self.codec == "ulaw":
            return pcm_to_ulaw(raw)
        if self.codec == "alaw":
            return pcm_to_alaw(raw)
        if self.codec == "pcm":
            return raw
        return _mp3(samples, self.rate)


def _mp3(samples: np.ndarray, rate: int) -> bytes:
    """Raw MP3 frames (no container), as ElevenLabs streams them."""
    codec = av.CodecContext.create("libmp3lame", "w")
    assert isinstance(codec, av.AudioCodecContext)
    codec.sample_rate = rate
    codec.layout = "mono"
    codec.format = av.AudioFormat("s16p")
    codec.bit_rate = 64000
    codec.time_base = Fraction(1, rate)
    codec.open()
    out = bytearray()
    frame_size = codec.frame_size or 1152
    for start in range(0, len(samples), frame_size):
        block = samples[start : start + frame_size]
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16p", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        for packet in codec.encode(frame):
            out += bytes(packet)
    for packet in codec.encode(None):
        out += bytes(packet)
    return bytes(out)
