"""Level gate: background talk (a TV, someone across the room) well below the caller's own
voice is not speech for the engine: it opens no turn and no barge-in, and inside a turn it
does not keep the turn from ending.

Levels are short windows (200 ms of frame power), not single frames: a TV's loud syllables
stand ~12 dB above the median of its frames, and one such frame used to open a turn.

The caller's level is learnt from their own confirmed turns (the 90th percentile of the
turn's window levels, i.e. their stressed syllables); a louder turn moves it up fast, a
quieter one down slowly, so a TV heard before the caller spoke is forgotten at their first
request. Until ``learn_ms`` of the caller's speech was heard only the absolute floor applies.
Opening a turn needs ``caller - below_db``; once a turn is open, ``hold_db`` more is allowed,
so a caller's quieter words do not end their own turn, while a TV 20+ dB down does not
hold it open either. Measured with bench/background_talk.py (README, Measuring).
"""

from __future__ import annotations

import math
from collections import deque

from bridge.conversation.echo import frame_rms

_FLOOR_RMS = 1.0
FULL_SCALE_DB = 20 * math.log10(32768)  # dB of an RMS of 32768: 0 dBFS
_WINDOW_FRAMES = 10  # 200 ms
_UP, _DOWN = 0.7, 0.3  # weight of a new turn's level when louder / quieter than the estimate


def percentile(values: list[float], q: float) -> float:
    """``float(np.percentile(values, q))`` (numpy's default 'linear' method), the same float:
    numpy's steps on Python floats (IEEE doubles both), without its ~40 us of Python per call.
    For finite values (a turn's window levels); at least one value."""
    ordered = sorted(values)
    n = len(ordered)
    virtual = (n - 1) * (q / 100)
    if virtual >= n - 1:
        return ordered[-1]
    below = math.floor(virtual)
    gamma = virtual - below
    a, b = ordered[below], ordered[below + 1]
    diff = b - a
    # numpy's _lerp: from the nearer end, so gamma 1 gives b exactly
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def _db(power: float) -> float:
    return 10 * math.log10(max(power, _FLOOR_RMS))


class LevelGate:
    def __init__(self, below_db: float, learn_ms: int, floor_dbfs: float = -90.0, hold_db: float = 10.0,
                 frame_ms: int = 20) -> None:
        self._below_db = below_db
        self._floor_db = floor_dbfs + FULL_SCALE_DB
        self._hold_db = hold_db
        self._learn_frames = max(1, learn_ms // frame_ms)
        # frame powers; a frame the VAD called silence waits here as its bytes (``quiet``):
        # its power is worked out only if a speech frame's level needs it within 200 ms
        self._window: deque[float | bytes] = deque(maxlen=_WINDOW_FRAMES)
        self._unmeasured = 0  # frames of the window still held as bytes (at most the last 10)
        self._turn: list[float] = []  # window levels (dB) of the speech of the turn being heard
        self._learnt = 0  # speech frames learnt from confirmed turns
        self.caller_db: float | None = None

    @property
    def enabled(self) -> bool:
        return self._below_db > 0

    def level_db(self) -> float:
        """The level of the last 200 ms, dB re an RMS of 1 (0 dBFS is FULL_SCALE_DB)."""
        window = self._window
        if not window:
            return -math.inf
        if self._unmeasured:
            self._measure()
        return _db(sum(window) / len(window))  # type: ignore[arg-type]  # floats now (_measure)

    def _measure(self) -> None:
        """The powers of the frames ``quiet`` held as bytes, as ``frame`` would have had them
        (the same float: rms * rms of frame_rms)."""
        window = self._window
        for i, item in enumerate(window):
            if not isinstance(item, float):  # a frame: bytes, or g711.UlawPcm (the legs' frames)
                rms = frame_rms(item)
                window[i] = rms * rms
        self._unmeasured = 0

    def threshold_db(self, in_turn: bool) -> float:
        if self.caller_db is None or self._learnt < self._learn_frames:
            return self._floor_db
        relative = self.caller_db - self._below_db - (self._hold_db if in_turn else 0.0)
        return max(self._floor_db, relative)

    def frame(self, rms: float, is_speech: bool, in_turn: bool) -> bool:
        """Every caller frame, in order: is this VAD speech loud enough to be the caller's?"""
        if not self.enabled:
            return is_speech
        self._append(float(rms * rms))  # a float: a measured power (an int or np.float32 is not)
        return is_speech and self.level_db() >= self.threshold_db(in_turn)

    def quiet(self, pcm: bytes) -> None:
        """``frame(frame_rms(pcm), False, ...)`` (which is False) without the RMS now: a frame
        the VAD did not call speech only fills the window, and most frames of a call are such
        (the caller listens, pauses); its power is worked out if a speech frame follows within
        the window (``level_db``). The engine's 50 frames a second a call skip the RMS.
        A bytearray or memoryview is copied (its producer may reuse it before it is measured);
        bytes and g711.UlawPcm are immutable and kept as they are."""
        if self._below_db > 0:
            self._append(pcm if isinstance(pcm, bytes) else bytes(pcm))
            self._unmeasured += 1

    def _append(self, item: float | bytes) -> None:
        window = self._window
        if len(window) == _WINDOW_FRAMES and not isinstance(window[0], float):
            self._unmeasured -= 1  # pushed out unmeasured: never needed
        window.append(item)

    def speech(self) -> None:
        """The last frame given to ``frame`` was speech of the turn being heard."""
        if self.enabled:
            self._turn.append(self.level_db())

    def turn_confirmed(self) -> None:
        """The turn had words in it: it was the caller, learn their level from it."""
        if self._turn:
            level = percentile(self._turn, 90)
            if self.caller_db is None:
                self.caller_db = level
            else:
                weight = _UP if level > self.caller_db else _DOWN
                self.caller_db = (1 - weight) * self.caller_db + weight * level
            self._learnt += len(self._turn)
        self._turn = []

    def turn_dropped(self) -> None:
        self._turn = []
