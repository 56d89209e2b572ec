"""WAV reading (any rate/width/channels -> 8 kHz mono s16le) and writing."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.wavfile import WavError, read_wav_8k_mono, write_wav


def _write(path: Path, data: bytes, rate: int, width: int, channels: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)
    return path


def _tone(rate: int, seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.sin(2 * np.pi * freq * t)


def _peak_hz(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * 8000 / len(x))


@pytest.mark.parametrize(
    ("rate", "width", "channels"),
    [(8000, 2, 1), (16000, 2, 1), (44100, 2, 2), (22050, 1, 1), (48000, 3, 2), (11025, 4, 1)],
)
def test_any_wav_becomes_8k_mono_s16(tmp_path: Path, rate: int, width: int, channels: int) -> None:
    x = _tone(rate, 0.5, 1000.0) * 0.5
    if width == 1:
        samples = (x * 127 + 128).astype(np.uint8).tobytes()
    elif width == 3:
        ints = (x * (2**23 - 1)).astype("<i4")
        samples = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    else:
        dtype = {2: "<i2", 4: "<i4"}[width]
        samples = (x * (2 ** (8 * width - 1) - 1)).astype(dtype).tobytes()
    if channels == 2:
        per = width
        frames = [samples[i : i + per] for i in range(0, len(samples), per)]
        samples = b"".join(f + f for f in frames)
    path = _write(tmp_path / "in.wav", samples, rate, width, channels)
    pcm = read_wav_8k_mono(path)
    assert len(pcm) == 2 * 4000  # 0.5 s at 8 kHz, whole samples
    assert abs(_peak_hz(pcm) - 1000.0) < 20
    level = np.abs(np.frombuffer(pcm, dtype="<i2")).max()
    assert 0.4 * 32767 < level < 0.6 * 32767


def test_write_then_read_is_identity_at_8k(tmp_path: Path) -> None:
    pcm = (_tone(8000, 0.2, 440.0) * 10000).astype("<i2").tobytes()
    path = write_wav(tmp_path / "sub" / "x.wav", pcm + b"\x01")  # a stray odd byte is dropped
    assert read_wav_8k_mono(path) == pcm
    stereo = write_wav(tmp_path / "st.wav", pcm + pcm, channels=2)
    with wave.open(str(stereo)) as w:
        assert w.getnchannels() == 2 and w.getnframes() == len(pcm) // 2


def test_unreadable_files_raise_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WavError, match="no such file"):
        read_wav_8k_mono(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not a wav file" * 10)
    with pytest.raises(WavError, match=r"junk\.wav"):
        read_wav_8k_mono(junk)
