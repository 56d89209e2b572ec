"""Stateful streaming resampler for live s16le mono audio, on libswresample (PyAV).

One instance per audio stream: it keeps the filter history between chunks, so a signal cut
into 20 ms pieces comes out as if resampled in one pass (chunk-by-chunk resampling without
state clicks at every edge). It holds back only the filter's look-ahead: a couple of
milliseconds, never whole chunks (soxr's stream mode holds 40-100 ms; see
DESIGN.md, Wire notes: Offline speech).
"""

from __future__ import annotations

import av
import numpy as np


class StreamResampler:
    """``push()`` PCM at ``in_rate``, get PCM at ``out_rate``; ``flush()`` returns the tail.

    Not thread-safe: use one instance from one thread at a time.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._carry = b""  # an odd trailing byte waits for its other half
        self._resampler = self._new()

    def _new(self) -> av.AudioResampler | None:
        if self.in_rate == self.out_rate:
            return None
        return av.AudioResampler(format="s16", layout="mono", rate=self.out_rate)

    def push(self, pcm: bytes) -> bytes:
        """Resample the next piece of the stream (any length; an odd byte is kept for later)."""
        data = self._carry + pcm
        usable = len(data) & ~1
        self._carry = data[usable:]
        if not usable:
            return b""
        if self._resampler is None:
            return data[:usable]
        samples = np.frombuffer(data, dtype="<i2", count=usable // 2)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.in_rate
        return frames_to_pcm(self._resampler.resample(frame))

    def flush(self) -> bytes:
        """End of stream: the held-back tail. The resampler is then fresh for a new stream."""
        self._carry = b""  # half a sample is not audio
        if self._resampler is None:
            return b""
        tail = frames_to_pcm(self._resampler.resample(None))
        self._resampler = self._new()
        return tail

    def reset(self) -> None:
        """Drop the state and any held-back audio (e.g. after a barge-in cut the stream)."""
        self._carry = b""
        self._resampler = self._new()


def frames_to_pcm(frames: list[av.AudioFrame]) -> bytes:
    """Resampler output (packed s16 mono frames) as one PCM byte string."""
    if not frames:
        return b""
    # Packed s16 mono: one plane, shape (1, samples); to_ndarray trims the alignment padding.
    return b"".join(f.to_ndarray().tobytes() for f in frames)


def resample_all(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resample a whole buffer in one pass (tests, offline tools)."""
    r = StreamResampler(in_rate, out_rate)
    return r.push(pcm) + r.flush()
