"""Drive the sans-I/O Engine by hand under a fake clock: frames with VAD decisions, provider
events and playback positions go in, actions come out."""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

from bridge.conversation import actions as act
from bridge.conversation.engine import Engine
from bridge.providers.base import ToolCall, Transcript
from bridge.settings import Settings

T = TypeVar("T")

FRAME_S = 0.02
SILENCE = bytes(320)


def tone(amplitude: int = 8000, n: int = 160) -> bytes:
    t = np.arange(n) / 8000
    return (np.sin(2 * np.pi * 300 * t) * amplitude).astype("<i2").tobytes()


LOUD = tone(8000)
FALLBACK = tone(3000) * 50  # 1 s


def make_settings(**conv: Any) -> Settings:
    """Settings for engine tests. Preemptive generation, the adaptive window and turn merging
    are off unless a test asks for them: most tests pin down one behaviour at a time."""
    conv.setdefault("preemptive_generation", False)
    conv.setdefault("early_finalize", "on")  # the harness has no real STT: as on Deepgram
    conv.setdefault("adaptive_endpointing", False)
    barge = dict(conv.pop("barge_in", {}))
    barge.setdefault("merge_window_ms", 0)
    data: dict[str, Any] = {"conversation": {**conv, "barge_in": barge}}
    return Settings.model_validate(data)


class Harness:
    def __init__(self, settings: Settings | None = None, counts: dict[str, int] | None = None,
                 fallback: bytes = FALLBACK, **conv: Any) -> None:
        self.settings = settings or make_settings(**conv)
        self.t = 1000.0
        self.heard: dict[str, int] = {}
        self.engine = Engine(
            self.settings,
            system_prompt="You are a test agent.",
            provider_counts=counts or {"stt": 1, "llm": 1, "tts": 1},  # type: ignore[arg-type]
            fallback_audio=fallback,
        )
        self.log: list[act.Action] = []
        self.playing: list[str] = []  # utterances queued at the fake leg, in order
        self.paused = False  # the fake leg's playout is paused (PausePlayback)

    # -- collecting ----------------------------------------------------------------------
    def collect(self) -> list[act.Action]:
        new = self.engine.take_actions()
        self.log.extend(new)
        for a in new:
            if isinstance(a, act.Play) and a.utterance_id not in self.playing:
                self.playing.append(a.utterance_id)
            if isinstance(a, act.ClearPlayback):
                self.playing.clear()
                self.paused = False
            elif isinstance(a, act.PausePlayback):
                self.paused = True
            elif isinstance(a, act.ResumePlayback):
                self.paused = False
        return new

    def of(self, kind: type[T], since: int = 0) -> list[T]:
        return [a for a in self.log[since:] if isinstance(a, kind)]

    def last(self, kind: type[T]) -> T:
        found = self.of(kind)
        assert found, f"no {kind.__name__} in {self.log}"
        return found[-1]

    @property
    def reply_id(self) -> str:
        reply = self.engine.reply
        assert reply is not None
        return reply.id

    # -- inputs ----------------------------------------------------------------------------
    def start(self) -> None:
        self.engine.start(self.t)
        self.collect()

    def frames(self, n: int, speech: bool, pcm: bytes | None = None) -> None:
        for _ in range(n):
            frame = pcm if pcm is not None else (LOUD if speech else SILENCE)
            due = self.engine.next_deadline()
            self.engine.on_frame(self.t, frame, speech)
            if not self.collect():
                # the driver does not re-read next_deadline after a frame that emitted nothing
                assert self.engine.next_deadline() == due, f"a silent frame moved the deadline at {self.t}"
            self.tick()
            self.t += FRAME_S

    def tick(self) -> None:
        """The engine's timers at the current time. Every engine test checks here that
        ``next_deadline`` is never later than a timer that acts (the driver sleeps until it)."""
        engine = self.engine
        due = engine.next_deadline()
        before = (engine.state, engine._dtmf, engine._turn, engine.reply, len(engine.history))
        engine.on_tick(self.t)
        acted = self.collect()
        if self.t < due - 1e-6:
            after = (engine.state, engine._dtmf, engine._turn, engine.reply, len(engine.history))
            assert not acted and after == before, f"on_tick acted at {self.t} before next_deadline {due}"

    def wait(self, seconds: float) -> None:
        """Silence for a while (frames keep coming, as on a live call)."""
        self.frames(round(seconds / FRAME_S), False)

    def transcript(self, text: str, final: bool = True, eou: bool = True) -> None:
        self.engine.on_transcript(self.t, Transcript(text, is_final=final, end_of_utterance=eou and final))
        self.collect()

    def llm(self, *parts: str | ToolCall, done: bool = True) -> str:
        stream_id = self.last(act.StartLlm).stream_id
        for part in parts:
            if isinstance(part, ToolCall):
                self.engine.on_llm_tool(self.t, stream_id, part)
            else:
                self.engine.on_llm_text(self.t, stream_id, part)
            self.collect()
        if done:
            self.engine.on_llm_done(self.t, stream_id)
            self.collect()
        return stream_id

    def tts(self, reply_id: str, ms: int, done: bool = True) -> None:
        """The TTS takes every clause sent so far and produces ``ms`` of audio for them."""
        texts = [a for a in self.of(act.TtsText) if a.reply_id == reply_id]
        per = ms // max(1, len(texts))
        for i in range(len(texts)):
            self.engine.on_tts_text_taken(self.t, reply_id, i)
            self.engine.on_tts_audio(self.t, reply_id, LOUD * (per // 20))
            self.collect()
        if done:
            self.engine.on_tts_done(self.t, reply_id)
            self.collect()

    def play(self, utterance_id: str, ms: int, speech: bool = False, pcm: bytes | None = None,
             finish: bool = True) -> None:
        """The leg plays ``ms`` of the utterance while caller frames keep arriving."""
        if self.heard.get(utterance_id, 0) == 0:
            self.engine.on_playback_started(self.t, utterance_id, self.t)
            self.collect()
        for _ in range(ms // 20):
            if self.engine.ended:
                return
            if not self.paused:  # a paused leg sends nothing: nothing more is heard
                self.heard[utterance_id] = self.heard.get(utterance_id, 0) + 20
            # a leg reporting every frame (PlaybackProgress), so positions here are exact
            self.engine.on_playback_progress(self.t, utterance_id, self.heard.get(utterance_id, 0))
            self.frames(1, speech, pcm)
            if utterance_id not in self.playing:
                return  # cleared by a barge-in
        if finish:
            self.engine.on_playback_done(self.t, utterance_id, self.heard.get(utterance_id, 0))
            self.collect()

    def say_turn(self, text: str, speech_ms: int = 600) -> None:
        """The caller says ``text``: speech frames, the endpoint, the STT's final."""
        self.frames(speech_ms // 20, True)
        n = self.settings.conversation.endpointing_ms // 20
        self.frames(n, False)
        self.transcript(text)

    def greet(self) -> None:
        """Start and let the greeting play out in full."""
        self.start()
        rid = self.reply_id
        self.tts(rid, 1000)
        self.play(rid, 1000)
