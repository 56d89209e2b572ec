"""Packet loss concealment: repeat the last good frame, fading linearly to silence.

The same method as aiortp's PcmConcealer (60 ms fade, then silence, so long bursts keep the
timeline without synthetic artefacts), vectorised with numpy: aiortp's per-sample Python loop
costs ~100 us per concealed frame, which matters when 200 calls lose packets at once.
"""

from __future__ import annotations

import numpy as np


class Concealer:
    def __init__(self, sample_rate: int = 8000, fade_ms: int = 60) -> None:
        self._fade = sample_rate * fade_ms // 1000
        self._history: bytes | None = None
        self._elapsed = 0

    def update(self, pcm: bytes) -> None:
        """Remember a good frame (s16le) as the concealment source; restarts the fade. Called
        for every good frame, so it only keeps a reference: the array is made on concealment."""
        self._history = pcm
        self._elapsed = 0

    def conceal(self, samples: int) -> bytes:
        out = np.zeros(samples, dtype="<i2")
        src = None if self._history is None else np.frombuffer(self._history, dtype="<i2",
                                                                count=len(self._history) // 2)
        fade = self._fade
        start = self._elapsed
        count = min(samples, max(fade - start, 0))
        if src is not None and len(src) and count > 0:
            pos = np.arange(start, start + count)
            gain = (fade - pos) / fade
            out[:count] = (src[pos % len(src)] * gain).astype("<i2")
        self._elapsed += samples
        return out.tobytes()
