"""Non-8 kHz provider audio (pcm_24000, mp3), as the ElevenLabs client declares it, decoded and
resampled chunk by chunk by the conversation's ChunkConverter must stay clean: a pure tone in,
a pure tone out, no clicks at the (odd-sized) chunk edges."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.audio.g711 import alaw_to_pcm
from bridge.conversation.convert import ChunkConverter
from bridge.providers.tts.elevenlabs_audio import NativeAudio, check_output_format
from devkit.fakes.tone import TONE_HZ, ToneSource


def stream_through(fmt: str, data: bytes, sizes: list[int]) -> np.ndarray:
    native = NativeAudio(fmt)
    converter = ChunkConverter()
    out = bytearray()
    pos, i = 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        chunk = native.chunk(data[pos : pos + size])
        assert chunk is not None and chunk.data == data[pos : pos + size]  # passed on unchanged
        out += converter.convert(chunk)
        pos, i = pos + size, i + 1
    out += converter.flush()
    return np.frombuffer(bytes(out), dtype="<i2").astype(np.float64)


def off_tone_db(x: np.ndarray) -> float:
    """Energy outside +-40 Hz of the tone, relative to the total (dB)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    off = spectrum[np.abs(freqs - TONE_HZ) > 40].sum()
    return float(10 * np.log10(off / spectrum.sum()))


# Odd sizes cut samples (and mp3 frames) in half at nearly every edge.
SIZES = [1, 333, 2047, 97, 4096, 513]


@pytest.mark.parametrize("fmt", ["pcm_24000", "pcm_16000", "pcm_44100", "mp3_44100_128", "mp3_22050_32"])
def test_tone_stays_clean_across_chunk_edges(fmt: str) -> None:
    data = ToneSource(fmt).encode("x" * 60)  # 1.8 s of 440 Hz
    out = stream_through(fmt, data, SIZES)
    assert abs(len(out) - 1.8 * 8000) < 0.1 * 8000  # mp3 adds encoder delay/padding
    body = out[800:-800]  # skip the codec's start-up and tail
    assert off_tone_db(body) < -35
    # a click is a sample-to-sample jump far larger than a 440 Hz sine at this level can make
    max_step = 8000 * 2 * np.pi * TONE_HZ / 8000
    assert np.max(np.abs(np.diff(body))) < 1.3 * max_step


@pytest.mark.parametrize("fmt", ["pcm_24000", "pcm_16000"])
def test_chunked_equals_one_pass(fmt: str) -> None:
    data = ToneSource(fmt).encode("x" * 40)
    one = stream_through(fmt, data, [len(data)])
    many = stream_through(fmt, data, SIZES)
    assert len(one) == len(many)
    assert np.max(np.abs(one - many)) <= 1


def test_telephony_formats_pass_through() -> None:
    chunk = NativeAudio("alaw_8000").chunk(b"\xd5" * 160)
    assert chunk is not None and chunk.encoding == "alaw" and chunk.data == b"\xd5" * 160
    converter = ChunkConverter()
    assert converter.convert(chunk) == alaw_to_pcm(b"\xd5" * 160)  # a table decode, no resampler
    assert converter.flush() == b""


@pytest.mark.parametrize("fmt", ["opus_48000_64", "ulaw_16000", "pcm_12345", "mp3_44100", "wav"])
def test_unsupported_formats_are_rejected_clearly(fmt: str) -> None:
    with pytest.raises(ValueError, match="unsupported ElevenLabs output_format"):
        check_output_format(fmt)
