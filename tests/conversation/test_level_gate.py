"""Level gate under a fake clock: once the caller has been heard, speech far below their own
level (background talk) opens no turn and does not pause the agent; speech near it does."""

from __future__ import annotations

from bridge.conversation import actions as act
from bridge.conversation.engine import State
from bridge.conversation.level_gate import LevelGate
from tests.conversation.harness import Harness, tone

CALLER = tone(8000)
TV = tone(8000 // 10)  # 20 dB below the caller


def _heard_caller(h: Harness) -> None:
    h.greet()
    h.frames(60, True, CALLER)  # 1.2 s of the caller: their level is learnt
    h.frames(15, False)
    h.transcript("where are you located")
    rid = h.reply_id
    h.llm("On Market Street.")
    h.tts(rid, 1000)
    h.play(rid, 1000)
    assert h.engine.state is State.LISTENING


def test_background_talk_far_below_the_caller_opens_no_turn() -> None:
    h = Harness(level_gate_db=15, level_gate_learn_ms=1000)
    _heard_caller(h)
    before = len(h.log)
    h.frames(200, True, TV)  # 4 s of TV the VAD calls speech
    assert h.engine.state is State.LISTENING
    assert not h.of(act.SttAudio, before) and not h.of(act.StartLlm, before)
    h.frames(20, True, tone(8000 // 2))  # the caller, a little quieter (6 dB): heard
    assert h.engine.state is State.USER_SPEAKING


def test_background_talk_does_not_pause_the_agent() -> None:
    h = Harness(level_gate_db=15, level_gate_learn_ms=1000)
    _heard_caller(h)
    h.say_turn("and on saturday")
    rid = h.reply_id
    h.llm("We open at ten on Saturday.")
    h.tts(rid, 2000)
    before = len(h.log)
    h.play(rid, 1000, speech=True, pcm=TV, finish=False)
    assert not h.of(act.PausePlayback, before) and not h.of(act.ClearPlayback, before)


def test_gate_open_until_the_caller_was_heard_and_when_off() -> None:
    h = Harness(level_gate_db=15, level_gate_learn_ms=1000)
    h.greet()
    h.wait(0.5)  # past the echo tail of the greeting
    h.frames(10, True, TV)  # nothing learnt yet: a quiet caller is still a caller
    assert h.engine.state is State.USER_SPEAKING
    off = LevelGate(0, 1000)
    off.speech(8000)
    off.turn_confirmed()
    assert off.passes(1.0)


def test_gate_learns_from_confirmed_turns_only() -> None:
    gate = LevelGate(15, 100)
    for _ in range(10):
        gate.speech(100.0)
    gate.turn_dropped()  # a turn with no words (noise): not the caller
    assert gate.caller_db is None and gate.passes(1.0)
    for _ in range(10):
        gate.speech(8000.0)
    gate.turn_confirmed()
    assert gate.passes(8000 / 4) and not gate.passes(8000 / 10)
