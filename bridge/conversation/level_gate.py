"""Level gate: background talk (a TV, someone across the room) well below the caller's own
voice does not open a turn or a barge-in.

The caller's level is learnt from their own confirmed turns (the median loudness of each
turn's speech frames, smoothed over turns); until enough of their speech was heard the gate
lets everything through. Only the opening of a turn is gated: inside a turn the VAD alone
decides, so a caller's quiet syllables do not end their turn early.
"""

from __future__ import annotations

import math
from statistics import median

_FLOOR_RMS = 1.0


def _db(rms: float) -> float:
    return 20 * math.log10(max(rms, _FLOOR_RMS))


class LevelGate:
    def __init__(self, below_db: float, learn_ms: int, frame_ms: int = 20, smoothing: float = 0.3) -> None:
        self._below_db = below_db
        self._learn_frames = max(1, learn_ms // frame_ms)
        self._smoothing = smoothing
        self._turn: list[float] = []  # speech-frame levels (dB) of the turn being heard
        self._learnt = 0  # speech frames learnt from confirmed turns
        self.caller_db: float | None = None

    @property
    def enabled(self) -> bool:
        return self._below_db > 0

    def passes(self, rms: float) -> bool:
        """May a speech frame this loud open a turn? (Always, until the caller was heard.)"""
        if not self.enabled or self.caller_db is None or self._learnt < self._learn_frames:
            return True
        return _db(rms) >= self.caller_db - self._below_db

    def speech(self, rms: float) -> None:
        """A speech frame of the turn being heard."""
        if self.enabled:
            self._turn.append(_db(rms))

    def turn_confirmed(self) -> None:
        """The turn had words in it: it was the caller, learn their level from it."""
        if self._turn:
            level = median(self._turn)
            self.caller_db = level if self.caller_db is None \
                else (1 - self._smoothing) * self.caller_db + self._smoothing * level
            self._learnt += len(self._turn)
        self._turn = []

    def turn_dropped(self) -> None:
        self._turn = []
