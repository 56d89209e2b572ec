"""Deepgram Flux's turn events drive preemption under a fake clock: EagerEndOfTurn starts the
held reply on its transcript, TurnResumed drops it, EndOfTurn ends the turn (not the VAD
window) and confirms the held reply when it says the same, else the reply starts again.
Barge-in (pause on onset) still runs on the VAD."""

from __future__ import annotations

from typing import Any

from bridge.conversation import actions as act
from bridge.conversation.engine import State
from bridge.conversation.stt_ends import LATE_FINAL_MAX_S
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


def _timed_out_turn(h: Harness, interim: str) -> int:
    """A turn whose EndOfTurn does not come (its socket is being reopened): the safety
    ForceEndTurn goes out, then the turn is answered from the interim after stt_final_timeout_s."""
    before = _speaking(h, interim)
    h.frames((h.settings.stt.flux_eot_timeout_ms + 1000) // 20 - 20, False)
    assert len(h.of(act.SttFinalize, before)) == 1
    h.wait(h.settings.conversation.stt_final_timeout_s + 0.1)
    assert h.last(act.StartLlm).messages[-1] == Message("user", interim)
    return before


def _answered(h: Harness, text: str) -> None:
    rid = h.reply_id
    h.llm(text)
    h.tts(rid, 600)
    h.play(rid, 600)
    assert h.engine.reply is None and h.engine.state is State.LISTENING


def test_a_late_end_of_turn_does_not_end_the_callers_next_turn() -> None:
    """The timed-out turn's EndOfTurn comes after the reconnect's replay, while the caller is
    in their NEXT turn: it is that old turn's (Flux answers in audio order), not this one's."""
    h = Harness(_flux_settings())
    _timed_out_turn(h, "book a table")
    _answered(h, "For how many?")
    before = len(h.log)
    h.frames(30, True)
    _event(h, "for four")
    _event(h, "book a table for two on friday", EAGER_END_OF_TURN)  # the replay's turn, late
    _end_of_turn(h, "Book a table for two on Friday.")
    # the caller is still talking: no reply, no preemption, the turn is open
    assert not h.of(act.StartLlm, before) and h.engine.reply is None
    assert h.engine.state is State.USER_SPEAKING
    late = [r for r in h.of(act.Record, before) if r.event == "stt_late_final"]
    assert len(late) == 1 and late[0].data["text"] == "Book a table for two on Friday."
    assert late[0].data["answered_with"] == "book a table"
    h.frames(10, True)
    _event(h, "for four people")
    h.frames(5, False)
    _end_of_turn(h, "For four people.")
    assert h.last(act.StartLlm).messages[-1] == Message("user", "For four people.")


def test_a_late_end_of_turn_during_the_reply_leaves_the_next_turn_its_own_end() -> None:
    h = Harness(_flux_settings())
    _timed_out_turn(h, "book a table")
    rid = h.reply_id
    _end_of_turn(h, "Book a table for two.")  # late, while the reply is on its way
    assert h.reply_id == rid
    _answered(h, "For when?")
    before = len(h.log)
    h.frames(30, True)
    _event(h, "friday")
    h.frames(5, False)
    _end_of_turn(h, "Friday at eight.")
    assert h.last(act.StartLlm).messages[-1] == Message("user", "Friday at eight.")
    assert len(h.of(act.StartLlm, before)) == 1


def test_a_late_end_that_never_comes_stops_being_waited_for() -> None:
    """A bound: an STT that broke its one-end-per-finalize promise must not swallow the
    caller's turns for the rest of the call."""
    h = Harness(_flux_settings(reprompt_after_s=60, hangup_after_s=90))
    _timed_out_turn(h, "book a table")
    _answered(h, "For how many?")
    h.wait(LATE_FINAL_MAX_S)
    before = len(h.log)
    h.frames(30, True)
    _event(h, "for four")
    h.frames(5, False)
    _end_of_turn(h, "For four.")
    assert h.last(act.StartLlm).messages[-1] == Message("user", "For four.")
    assert len(h.of(act.StartLlm, before)) == 1


def test_v1_a_late_final_is_not_taken_into_the_callers_next_turn() -> None:
    """Deepgram v1: the late answer to the endpoint's Finalize is the old turn's words; they
    must not be prepended to the next turn (nor its end count as that turn's)."""
    h = Harness(stt_final_timeout_s=1.0)
    h.greet()
    h.frames(20, True)
    h.transcript("are you open", final=False)
    h.wait(1.6)  # endpoint, Finalize, no answer: the turn goes on the interim
    assert h.last(act.StartLlm).messages[-1] == Message("user", "are you open")
    _answered(h, "Yes.")
    before = len(h.log)
    h.frames(20, True)
    h.transcript("are you open on sunday")  # the late from_finalize answer
    late = [r for r in h.of(act.Record, before) if r.event == "stt_late_final"]
    assert [r.data["text"] for r in late] == ["are you open on sunday"]
    h.frames(n := h.settings.conversation.endpointing_ms // 20, False)
    h.transcript("until when")
    assert h.last(act.StartLlm).messages[-1] == Message("user", "until when")
    assert len(h.of(act.StartLlm, before)) == 1 and n
