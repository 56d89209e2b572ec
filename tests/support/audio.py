"""Test audio made on the spot (no files in the repo): espeak-ng speech and synthetic signals."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np


def speech_wav(text: str, path: Path, voice: str = "en-us+klatt") -> Path:
    """espeak-ng speech at 8 kHz mono s16 (sox -R: no random dither, so runs repeat exactly)."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(
        ["sox", "-R", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(path)],
        check=True,
        capture_output=True,
    )
    raw.unlink()
    return path


def have_speech_tools() -> bool:
    return bool(shutil.which("espeak-ng") and shutil.which("sox"))


def read_wav_pcm(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 8000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.readframes(w.getnframes())


def chirp_pcm(seconds: float, rate: int = 8000, f0: float = 300.0, f1: float = 3000.0) -> bytes:
    """A linear chirp: unambiguous to cross-correlate, survives G.711 well."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (np.sin(phase) * 12000).astype("<i2").tobytes()


def best_correlation(reference: bytes, received: bytes) -> tuple[float, int]:
    """Peak normalised cross-correlation of received against reference, and its lag in samples."""
    a = np.frombuffer(reference, "<i2").astype(np.float64)
    b = np.frombuffer(received, "<i2").astype(np.float64)
    if len(a) == 0 or len(b) == 0:
        return 0.0, 0
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)
    lag = int(np.argmax(corr[: len(b)]))
    seg = b[lag : lag + len(a)]
    ref = a[: len(seg)]
    denom = np.sqrt(np.sum(ref**2) * np.sum(seg**2))
    return (float(np.sum(ref * seg) / denom) if denom else 0.0), lag
