"""WAV files for the call path: read any WAV as 8 kHz s16le mono, write simple WAVs.

Reading goes through PyAV (FFmpeg): any rate, sample width (8/16/24/32-bit, float), channel
count, or G.711 WAV. The whole file is resampled in one stateful pass, so there are no chunk
edge artefacts. Unreadable input raises WavError naming the file and the reason.
"""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np

TARGET_RATE = 8000


class WavError(ValueError):
    """The file is missing or not audio PyAV can decode."""


def read_wav_8k_mono(path: str | Path) -> bytes:
    """The file's audio as 8 kHz 16-bit little-endian mono PCM."""
    path = Path(path)
    if not path.is_file():
        raise WavError(f"{path}: no such file")
    chunks: list[bytes] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise WavError(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=TARGET_RATE)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(_frame_bytes(out))
            for out in resampler.resample(None):  # flush the resampler's tail
                chunks.append(_frame_bytes(out))
    except WavError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise WavError(f"{path}: not readable audio ({exc})") from exc
    return b"".join(chunks)


def _frame_bytes(frame: av.AudioFrame) -> bytes:
    # Packed s16 mono: plane 0 holds the samples; trim the plane's alignment padding.
    data = np.frombuffer(bytes(frame.planes[0]), dtype="<i2")[: frame.samples]
    return data.tobytes()


def write_wav(path: str | Path, pcm: bytes, rate: int = TARGET_RATE, channels: int = 1) -> Path:
    """Write s16le PCM (interleaved if ``channels`` > 1) as a WAV file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame_bytes = 2 * channels
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm[: len(pcm) // frame_bytes * frame_bytes])
    return path
