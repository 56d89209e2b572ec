"""Deepgram Flux's turn events drive preemption under a fake clock: EagerEndOfTurn starts the
held reply on its transcript, TurnResumed drops it, EndOfTurn ends the turn (not the VAD
window) and confirms the held reply when it says the same, else the reply starts again.
Barge-in (pause on onset) still runs on the VAD."""

from __future__ import annotations

from typing import Any

from bridge.conversation import actions as act
from bridge.conversation.engine import State
from bridge.providers.base import EAGER_END_OF_TURN, TURN_RESUMED, Message, Transcript
from bridge.settings import Settings
from tests.conversation.harness import Harness, make_settings


def _flux_settings(**conv: Any) -> Settings:
    conv.setdefault("preemptive_generation", True)
    conv.setdefault("early_finalize", "auto")
    data = make_settings(**conv).model_dump()
    data["stt"]["providers"] = ["deepgram-flux"]
    return Settings.model_validate(data)


def _event(h: Harness, text: str, event: str = "") -> None:
    """A Flux TurnInfo other than EndOfTurn: an interim, maybe carrying a turn event."""
    h.engine.on_transcript(h.t, Transcript(text, False, False, 0.0, event))
    h.collect()


def _end_of_turn(h: Harness, text: str) -> None:
    h.engine.on_transcript(h.t, Transcript(text, True, True, 0.9))
    h.collect()


def _speaking(h: Harness, update: str) -> int:
    h.greet()
    before = len(h.log)
    h.frames(30, True)
    _event(h, update)
    h.frames(20, False)  # 400 ms of silence: past the VAD window, Flux has not spoken
    return before


def _plays(h: Harness, since: int) -> set[str]:
    return {p.utterance_id for p in h.of(act.Play, since)}


def test_eager_then_end_of_turn_confirms_the_held_reply() -> None:
    h = Harness(_flux_settings())
    before = _speaking(h, "are you open")
    # no start on the VAD's silence, no endpoint, no finalize: Flux decides the turn
    assert not h.of(act.StartLlm, before) and not h.of(act.SttFinalize, before)
    assert h.engine.state is State.USER_SPEAKING
    _event(h, "are you open on saturday", EAGER_END_OF_TURN)
    start = h.of(act.StartLlm, before)
    assert len(start) == 1 and start[0].messages[-1] == Message("user", "are you open on saturday")
    rid = h.reply_id
    h.llm("Yes, from nine to one.")
    h.tts(rid, 1000)
    h.frames(10, False)
    assert h.of(act.TtsText, before) and not h.of(act.Play, before)  # held: nothing plays
    assert not h.of(act.EndUtterance, before)
    _end_of_turn(h, "Are you open on Saturday?")
    assert _plays(h, before) == {rid}
    assert h.of(act.EndUtterance, before)[-1].utterance_id == rid
    assert [p.outcome for p in h.of(act.Preempted)] == ["confirmed"]
    assert len(h.of(act.StartLlm, before)) == 1
    assert h.engine.history[-2] == Message("user", "Are you open on Saturday?")
    assert not h.of(act.SttFinalize, before)  # Flux's end of turn needs no ForceEndTurn


def test_eager_then_resumed_cancels_and_end_of_turn_restarts() -> None:
    h = Harness(_flux_settings())
    before = _speaking(h, "I would like")
    _event(h, "I would like to book", EAGER_END_OF_TURN)
    stale = h.reply_id
    h.llm("Sure, what would you like to book?")
    h.tts(stale, 800)
    h.frames(10, True)  # the VAD hears speech again: Flux's TurnResumed decides, not the VAD
    assert h.engine.reply is not None and h.engine.reply.held
    _event(h, "I would like to book", TURN_RESUMED)
    assert act.CancelReply(stale) in h.log[before:]
    assert [p.outcome for p in h.of(act.Preempted)] == ["resumed"]
    assert h.engine.reply is None
    assert all(m.content != "I would like to book" for m in h.engine.history)
    h.frames(20, True)
    _event(h, "I would like to book a table for two")
    h.frames(5, False)
    _end_of_turn(h, "I would like to book a table for two.")
    starts = h.of(act.StartLlm, before)
    assert len(starts) == 2
    assert starts[-1].messages[-1] == Message("user", "I would like to book a table for two.")
    fresh = h.reply_id
    assert fresh != stale
    h.llm("For when?")
    h.tts(fresh, 600)
    assert _plays(h, before) == {fresh}  # the stale reply was never heard
    assert [p.outcome for p in h.of(act.Preempted)] == ["resumed"]


def test_eager_with_a_different_final_restarts() -> None:
    h = Harness(_flux_settings())
    before = _speaking(h, "are you")
    _event(h, "are you open", EAGER_END_OF_TURN)
    stale = h.reply_id
    h.llm("Yes, we are open today.")
    h.tts(stale, 1000)
    _end_of_turn(h, "are you open on sunday")
    assert act.CancelReply(stale) in h.log[before:]
    assert [p.outcome for p in h.of(act.Preempted)] == ["changed"]
    starts = h.of(act.StartLlm, before)
    assert len(starts) == 2 and starts[-1].messages[-1] == Message("user", "are you open on sunday")
    assert Message("user", "are you open") not in starts[-1].messages
    fresh = h.reply_id
    h.llm("No, we are closed on Sunday.")
    h.tts(fresh, 800)
    assert _plays(h, before) == {fresh}


def test_without_eager_events_end_of_turn_answers() -> None:
    h = Harness(_flux_settings())
    before = _speaking(h, "hello")
    _end_of_turn(h, "hello there")
    assert h.engine.state is State.THINKING
    assert h.last(act.StartLlm).messages[-1] == Message("user", "hello there")
    assert not h.of(act.Preempted, before)


def test_end_of_turn_that_never_comes_is_forced_after_the_flux_timeout() -> None:
    h = Harness(_flux_settings())
    before = _speaking(h, "hello")
    timeout_ms = h.settings.stt.flux_eot_timeout_ms
    h.frames((timeout_ms + 1000) // 20 - 20 - 1, False)
    assert not h.of(act.SttFinalize, before)
    h.frames(1, False)
    assert len(h.of(act.SttFinalize, before)) == 1  # ForceEndTurn; its EndOfTurn ends the turn
    _end_of_turn(h, "hello")
    assert h.last(act.StartLlm).messages[-1] == Message("user", "hello")


def test_pause_on_onset_still_uses_the_vad() -> None:
    h = Harness(_flux_settings(barge_in={"min_speech_ms": 250, "pause_after_ms": 40}))
    _speaking(h, "when are you open")
    _end_of_turn(h, "when are you open")
    rid = h.reply_id
    h.llm("We are open from nine to six. We are closed on Sunday.")
    h.tts(rid, 4000)
    h.play(rid, 1000, finish=False)
    before = len(h.log)
    h.play(rid, 40, speech=True, finish=False)
    assert len(h.of(act.PausePlayback, before)) == 1 and not h.of(act.ClearPlayback, before)
    h.frames(11, True)  # 260 ms: confirmed on the VAD
    assert h.of(act.ClearPlayback, before) and h.of(act.BargeIn, before)
