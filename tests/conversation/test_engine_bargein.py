"""Barge-in under a fake clock: the leg is cleared in the confirming frame, the reply is
cancelled, the history keeps only what was heard; backchannels and echo do not interrupt."""

from __future__ import annotations

from bridge.conversation import actions as act
from bridge.conversation.engine import State
from bridge.providers.base import Message
from tests.conversation.harness import LOUD, Harness, tone

REPLY = "We are open from nine to six. On Saturday we open at ten. We are closed on Sunday."


def _answering(h: Harness) -> str:
    h.greet()
    h.say_turn("when are you open")
    rid = h.reply_id
    h.llm(REPLY)
    h.tts(rid, 6000)  # three clauses, 2 s each
    return rid


def test_barge_in_clears_within_one_frame_and_truncates_history() -> None:
    h = Harness(barge_in={"min_speech_ms": 200})
    rid = _answering(h)
    h.play(rid, 2600, finish=False)  # the first sentence and a bit of the second
    before = len(h.log)
    assert not h.of(act.ClearPlayback, before)
    h.frames(9, True)  # 180 ms of speech: not yet
    assert not h.of(act.ClearPlayback, before)
    h.frames(1, True)  # the 200 ms frame confirms it
    assert h.of(act.ClearPlayback, before) and h.of(act.CancelReply, before)
    assert h.last(act.BargeIn).heard_ms == 2600
    assert h.engine.state is State.USER_SPEAKING
    # history: only the heard words of the reply, then the caller's new turn
    assert h.engine.history[-1] == Message("assistant", "We are open from nine to six. On Saturday")
    h.frames(15, False)
    h.transcript("what about holidays")
    msgs = h.last(act.StartLlm).messages
    assert msgs[-2] == Message("assistant", "We are open from nine to six. On Saturday")
    assert msgs[-1] == Message("user", "what about holidays")
    rec = [a for a in h.of(act.Record) if a.event == "agent" and a.data.get("interrupted")]
    assert rec and rec[-1].data["full_text"] == REPLY


def test_barge_in_during_an_unfinished_llm_round_keeps_heard_words() -> None:
    h = Harness(barge_in={"min_speech_ms": 100})
    h.greet()
    h.say_turn("tell me about the prices")
    rid = h.reply_id
    h.llm("A cleaning costs forty dollars. ", done=False)
    h.tts(rid, 2000, done=False)
    h.play(rid, 1000, finish=False)
    h.frames(5, True)
    assert h.of(act.CancelReply)
    assert h.engine.history[-1] == Message("assistant", "A cleaning costs")


def test_short_cough_does_not_interrupt() -> None:
    h = Harness(barge_in={"min_speech_ms": 250, "max_gap_ms": 200})
    rid = _answering(h)
    h.play(rid, 1000, finish=False)
    before = len(h.log)
    h.play(rid, 160, speech=True, finish=False)  # 160 ms cough
    h.play(rid, 400, finish=False)
    assert not h.of(act.ClearPlayback, before)
    assert len(h.of(act.SttFinalize, before)) == 1  # its audio is finalised and dropped
    h.transcript("huh")  # the dropped final
    h.play(rid, 4440)
    assert h.engine.state is State.LISTENING
    assert h.engine.history[-1] == Message("assistant", REPLY)
    assert not h.of(act.StartLlm, before)


def test_backchannel_words_do_not_interrupt_but_real_words_do() -> None:
    h = Harness(barge_in={"min_speech_ms": 200, "min_words": 1})
    rid = _answering(h)
    h.play(rid, 1000, finish=False)
    before = len(h.log)
    h.play(rid, 200, speech=True, finish=False)
    h.transcript("mm-hm", final=False)
    h.play(rid, 200, speech=True, finish=False)
    assert not h.of(act.ClearPlayback, before)  # 400 ms of "mm-hm": still the agent's turn
    h.transcript("mm-hm wait", final=False)
    assert h.of(act.ClearPlayback, before)


def test_echo_of_the_agent_does_not_interrupt() -> None:
    h = Harness(barge_in={"min_speech_ms": 200, "echo_return_loss_db": 6})
    rid = _answering(h)
    echo = tone(8000 // 4)  # the agent's own audio 12 dB down (VAD says "speech")
    before = len(h.log)
    h.play(rid, 3000, speech=True, pcm=echo, finish=False)
    assert not h.of(act.ClearPlayback, before)
    louder = tone(12000)  # the caller, louder than the echo could be
    h.play(rid, 400, speech=True, pcm=louder, finish=False)
    assert h.of(act.ClearPlayback, before)


def test_non_interruptible_greeting_plays_through() -> None:
    h = Harness(greeting_interruptible=False, greeting="Welcome to the line. All calls are recorded.")
    h.start()
    rid = h.reply_id
    h.tts(rid, 3000)
    h.play(rid, 2000, speech=True, pcm=LOUD, finish=False)
    assert not h.of(act.ClearPlayback)
    assert not h.of(act.SttAudio)
    h.play(rid, 1000)
    assert h.engine.state is State.LISTENING


def test_interruptible_greeting_is_cut() -> None:
    h = Harness(greeting_interruptible=True, greeting="Welcome to the line. All calls are recorded.")
    h.start()
    rid = h.reply_id
    h.tts(rid, 3000)
    h.play(rid, 1420, finish=False)
    h.play(rid, 400, speech=True, finish=False)  # confirmed in the 13th frame (260 ms)
    assert h.of(act.ClearPlayback)
    assert h.last(act.BargeIn).heard_ms == 1440  # paused on its first frame (pause_after_ms 20), not 260
    assert h.engine.history[-1] == Message("assistant", "Welcome to the line.")


def test_barge_in_disabled() -> None:
    h = Harness(barge_in={"enabled": False})
    rid = _answering(h)
    h.play(rid, 2000, speech=True, finish=False)
    assert not h.of(act.ClearPlayback)
