"""Preemptive generation under a fake clock: the reply starts when the caller falls silent,
its text/audio/tools are held until the turn is confirmed, and it is restarted when the final
transcript differs or the caller goes on."""

from __future__ import annotations

from bridge.conversation import actions as act
from bridge.conversation.engine import State
from bridge.providers.base import Message, ToolCall
from bridge.settings import Settings
from tests.conversation.harness import Harness, make_settings


def _preempted(h: Harness, interim: str) -> int:
    """The caller speaks; the STT's interim is ``interim``; the first silent frame starts the
    reply. Returns the log position before that frame."""
    h.greet()
    h.frames(30, True)
    h.transcript(interim, final=False)
    before = len(h.log)
    h.frames(1, False)
    return before


def test_preemptive_reply_is_held_then_released_when_the_final_agrees() -> None:
    h = Harness(preemptive_generation=True)
    before = _preempted(h, "are you open on saturday")
    start = h.of(act.StartLlm, before)
    assert len(start) == 1 and start[0].messages[-1] == Message("user", "are you open on saturday")
    rid = h.reply_id
    h.llm("Yes, from nine to one.")
    h.tts(rid, 1000)
    assert h.of(act.TtsText, before)  # the TTS works ahead
    assert not h.of(act.Play, before) and not h.of(act.EndUtterance, before)  # nothing plays
    assert h.engine.state is State.USER_SPEAKING
    h.frames(14, False)  # the endpoint: finalize
    assert h.of(act.SttFinalize, before) and not h.of(act.Play, before)
    h.transcript("Are you open on Saturday?")
    plays = h.of(act.Play, before)
    assert plays and {p.utterance_id for p in plays} == {rid}
    assert sum(len(p.pcm) for p in plays) == 1000 * 16
    assert h.of(act.EndUtterance, before)[-1].utterance_id == rid
    assert [p.outcome for p in h.of(act.Preempted)] == ["confirmed"]
    assert len(h.of(act.StartLlm, before)) == 1  # no second request
    assert h.engine.history[-2] == Message("user", "Are you open on Saturday?")
    h.play(rid, 1000)
    marks = h.last(act.TurnDone).marks
    assert marks.preempted and marks.llm_start is not None and marks.llm_start < marks.turn_end
    assert h.engine.history[-1] == Message("assistant", "Yes, from nine to one.")


def test_preemptive_reply_is_restarted_when_the_final_differs() -> None:
    h = Harness(preemptive_generation=True)
    before = _preempted(h, "are you open")
    stale = h.reply_id
    h.llm("Yes, we are open today.")
    h.tts(stale, 1000)
    h.frames(14, False)
    h.transcript("are you open on sunday")
    assert act.CancelReply(stale) in h.log[before:]
    assert [p.outcome for p in h.of(act.Preempted)] == ["changed"]
    starts = h.of(act.StartLlm, before)
    assert len(starts) == 2 and starts[-1].messages[-1] == Message("user", "are you open on sunday")
    assert Message("user", "are you open") not in starts[-1].messages
    assert all(p.utterance_id != stale for p in h.of(act.Play, before))  # never heard
    fresh = h.reply_id
    assert fresh != stale
    h.llm("No, we are closed on Sunday.")
    h.tts(fresh, 800)
    assert h.of(act.Play, before)[0].utterance_id == fresh


def test_preemptive_reply_is_cancelled_when_the_caller_goes_on() -> None:
    h = Harness(preemptive_generation=True)
    before = _preempted(h, "I would like to book")
    stale = h.reply_id
    h.llm("Sure, what would you like to book?")
    assert len(h.of(act.SttFinalize, before)) == 1  # asked at once, not after the window
    h.frames(5, False)
    h.frames(20, True)  # the caller continues after a short pause
    assert act.CancelReply(stale) in h.log[before:]
    assert [p.outcome for p in h.of(act.Preempted)] == ["resumed"]
    assert h.engine.reply is None
    assert all(m.content != "I would like to book" for m in h.engine.history)
    h.transcript("I would like to book")  # the answer to that finalize: one segment of the turn
    h.transcript("a table for two", final=False)
    h.frames(1, False)  # silent again: a new preemptive reply on the whole turn so far
    assert h.last(act.StartLlm).messages[-1] == Message("user", "I would like to book a table for two")
    assert len(h.of(act.SttFinalize, before)) == 2
    h.frames(14, False)
    assert len(h.of(act.SttFinalize, before)) == 2  # the endpoint waits for that answer
    h.transcript("a table for two.")
    assert [p.outcome for p in h.of(act.Preempted)] == ["resumed", "confirmed"]
    assert h.engine.history[-1] == Message("user", "I would like to book a table for two.")


def test_tool_calls_of_a_preemptive_reply_wait_for_the_confirmation() -> None:
    h = Harness(preemptive_generation=True)
    before = _preempted(h, "that is all goodbye")
    rid = h.reply_id
    h.llm(ToolCall("c1", "end_call", {}))
    assert not [a for a in h.of(act.Record, before) if a.event == "tool_call"]
    assert not h.of(act.TtsText, before)
    h.frames(14, False)
    h.transcript("That is all, goodbye.")
    assert [a for a in h.of(act.Record, before) if a.event == "tool_call"]
    assert h.reply_id == rid and h.engine.reply is not None and h.engine.reply.then == "hangup"
    assert h.of(act.TtsText, before)  # the goodbye line, once confirmed


def test_failed_preemptive_reply_is_dropped_without_fallback() -> None:
    h = Harness(preemptive_generation=True, counts={"stt": 1, "llm": 2, "tts": 1})
    before = _preempted(h, "where are you")
    h.engine.on_llm_failed(h.t, h.last(act.StartLlm).stream_id, "network: reset")
    h.collect()
    assert [p.outcome for p in h.of(act.Preempted)] == ["dropped"]
    assert not [a for a in h.of(act.Play, before)]  # no fallback line during the caller's turn
    assert h.of(act.UseProvider, before)
    h.frames(14, False)
    h.transcript("where are you")
    # the next silent frame had already started a fresh preemptive reply on the spare LLM
    assert h.last(act.StartLlm).stream_id.endswith(".1")


def test_early_final_ends_the_turn_at_the_endpoint() -> None:
    h = Harness(preemptive_generation=True)
    before = _preempted(h, "where are you located")
    assert len(h.of(act.SttFinalize, before)) == 1
    h.frames(7, False)
    h.transcript("Where are you located?")  # the early final, 160 ms into the silence
    assert h.engine.reply is not None and h.engine.reply.held  # not confirmed before the window
    h.frames(6, False)
    assert h.engine.reply is not None and h.engine.reply.held
    h.frames(1, False)  # 300 ms: the endpoint; the final is already in
    assert h.engine.reply is not None and not h.engine.reply.held
    assert len(h.of(act.SttFinalize, before)) == 1
    assert [p.outcome for p in h.of(act.Preempted)] == ["confirmed"]


def test_preemption_off_waits_for_the_final() -> None:
    h = Harness(preemptive_generation=False)
    before = _preempted(h, "are you open on saturday")
    h.frames(10, False)
    assert not h.of(act.StartLlm, before)


def test_early_finalize_auto_is_off_for_an_utterance_decoder() -> None:
    """pocketsphinx (the default STT) decodes whole utterances: no finalize at every pause;
    the reply still starts preemptively and the finalize waits for the endpoint."""
    h = Harness(preemptive_generation=True, early_finalize="auto")
    before = _preempted(h, "where are you located")
    assert h.of(act.StartLlm, before) and not h.of(act.SttFinalize, before)
    h.frames(14, False)
    assert len(h.of(act.SttFinalize, before)) == 1
    h.transcript("where are you located")
    assert [p.outcome for p in h.of(act.Preempted)] == ["confirmed"]
    data = make_settings(preemptive_generation=True, early_finalize="auto").model_dump()
    data["stt"]["providers"] = ["deepgram"]
    on = Harness(Settings.model_validate(data))
    before = _preempted(on, "where are you located")
    assert len(on.of(act.SttFinalize, before)) == 1


def test_preemption_on_finals_only_waits_for_the_early_final() -> None:
    h = Harness(preemptive_generation=True, preemptive_on_interim=False)
    before = _preempted(h, "are you open")
    assert h.of(act.SttFinalize, before) and not h.of(act.StartLlm, before)  # the interim is not used
    h.frames(5, False)
    h.transcript("Are you open on Sunday?")  # the early final, before the window ends
    starts = h.of(act.StartLlm, before)
    assert len(starts) == 1 and starts[0].messages[-1] == Message("user", "Are you open on Sunday?")
    h.frames(10, False)
    assert [p.outcome for p in h.of(act.Preempted)] == ["confirmed"]
    assert len(h.of(act.StartLlm, before)) == 1


def test_a_second_short_pause_soon_after_an_early_finalize_waits_for_the_endpoint() -> None:
    """Deepgram leaves a Finalize unanswered when it has no significant audio to process: two
    short pauses 60 ms apart in one sentence must not each send one (the turn then waited
    stt_final_timeout_s for the second's answer; every "I would like to ... make an
    appointment" in bench/stream_capacity.py did)."""
    h = Harness(preemptive_generation=True)
    before = _preempted(h, "I would like to")  # the first pause: early finalize
    assert len(h.of(act.SttFinalize, before)) == 1
    h.frames(2, True)
    h.frames(1, False)  # a second pause 60 ms later: too little audio since the finalize
    assert len(h.of(act.SttFinalize, before)) == 1
    h.transcript("I would like to")  # the answer to the one finalize sent
    h.frames(20, True)
    h.frames(1, False)  # the end of the sentence: 400 ms of audio since, finalized early
    assert len(h.of(act.SttFinalize, before)) == 2
    h.transcript("make an appointment.")
    h.frames(14, False)  # the endpoint: every finalize answered, the turn is complete
    assert Message("user", "I would like to make an appointment.") in h.engine.history
    assert h.engine.state is State.THINKING
