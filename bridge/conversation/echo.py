"""Echo guard: tell the caller's voice from the agent's own voice coming back down the line.

While the agent talks, each caller frame is compared with the loudest agent frame played in
the last ``tail_ms`` (the echo path's delay). Caller audio that is not louder than that frame
minus the expected echo return loss is taken for echo and never starts a barge-in.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from bridge.leg import FRAME_BYTES

# dtype objects built once: ``np.frombuffer(pcm, dtype="<i2")`` parses the string on every
# call, ~1.5 us of the ~6 us a frame's RMS cost (50 frames a second a call)
_I16 = np.dtype("<i2")
_F64 = np.dtype(np.float64)


def frame_rms(pcm: bytes) -> float:
    """The RMS of s16le samples. One float64 copy and a dot product: exact (a frame's sum of
    squares is far below 2**53) and ~4x cheaper than ``np.mean`` of the squares, which runs
    Python code of its own on every one of the 50 frames a second of every call."""
    n = len(pcm) // 2
    if n == 0:
        return 0.0
    samples = np.frombuffer(pcm, _I16, n).astype(_F64)
    return math.sqrt(float(samples.dot(samples)) / n)


def frames_rms(pcm: bytes) -> list[float]:
    """``frame_rms`` of each whole 20 ms frame of ``pcm``, in one pass (a TTS chunk's frames)."""
    frames = len(pcm) // FRAME_BYTES
    if frames == 0:
        return []
    samples = np.frombuffer(pcm, _I16, frames * FRAME_BYTES // 2).astype(_F64)
    samples = samples.reshape(frames, FRAME_BYTES // 2)
    power = np.einsum("ij,ij->i", samples, samples) / (FRAME_BYTES // 2)
    return [math.sqrt(p) for p in power.tolist()]


_KEEP_UTTERANCES = 8


class AgentLevels:
    """The per-frame loudness of one utterance's agent audio, in play order."""

    def __init__(self) -> None:
        self.levels: list[float] = []
        self._carry = b""

    def add(self, pcm: bytes) -> None:
        data = self._carry + pcm if self._carry else pcm
        full = len(data) // FRAME_BYTES * FRAME_BYTES
        self.levels += frames_rms(data)
        self._carry = data[full:]


class EchoGuard:
    def __init__(self, return_loss_db: float, tail_ms: int, frame_ms: int = 20) -> None:
        self._factor = 10 ** (-return_loss_db / 20)
        self._tail_s = tail_ms / 1000
        self._frame_ms = frame_ms
        self._recent: deque[tuple[float, float]] = deque()  # (time played, level)
        # utterance -> frames already taken into _recent; only the latest few are kept, so a
        # long call does not keep one entry per reply it ever played
        self._pos: dict[str, int] = {}

    def played(self, now: float, utterance_id: str, levels: AgentLevels, heard_ms: int) -> None:
        """Note what the leg has played of ``utterance_id`` up to ``heard_ms``."""
        upto = min(len(levels.levels), heard_ms // self._frame_ms)
        start = self._pos.get(utterance_id, 0)
        for level in levels.levels[start:upto]:
            self._recent.append((now, level))
        if upto > start:
            self._pos[utterance_id] = upto
            while len(self._pos) > _KEEP_UTTERANCES:
                del self._pos[next(iter(self._pos))]  # the oldest: it stopped playing long ago

    def is_echo(self, now: float, caller_rms: float) -> bool:
        recent = self._recent
        while recent and recent[0][0] < now - self._tail_s:
            recent.popleft()
        if not recent:
            return False
        reference = max(level for _, level in recent)
        return caller_rms <= reference * self._factor
