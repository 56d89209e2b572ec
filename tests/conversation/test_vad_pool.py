"""Silero models are reused across calls (building one costs ~35 ms of CPU) and reset."""

from __future__ import annotations

import numpy as np

from bridge.conversation.vad import WebrtcSileroVad, create_vad, release_vad
from bridge.settings.conversation import VadSettings


def _noise(seconds: float) -> bytes:
    rng = np.random.default_rng(1)
    return (rng.normal(0, 6000, int(8000 * seconds))).astype("<i2").tobytes()


def test_a_released_model_serves_the_next_call_reset() -> None:
    first = create_vad(VadSettings())
    assert isinstance(first, WebrtcSileroVad)
    model = first._silero._model
    for i in range(0, 16000, 320):  # feed a second of audio so the model has state
        first.is_speech(_noise(2.0)[i : i + 320])
    release_vad(first)
    assert first._silero._model is None
    second = create_vad(VadSettings())
    assert isinstance(second, WebrtcSileroVad)
    assert second._silero._model is model  # reused
    assert second._silero._speaking is False and second._silero._pending.size == 0
    release_vad(second)
    release_vad(second)  # twice is harmless
    release_vad(object())  # not a silero VAD: nothing happens
