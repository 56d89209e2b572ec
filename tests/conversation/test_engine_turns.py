"""The engine under a fake clock: end of turn, greeting, silence handling, DTMF, max length."""

from __future__ import annotations

from bridge.conversation import actions as act
from bridge.conversation.engine import State
from bridge.providers.base import Message
from tests.conversation.harness import Harness


def test_greeting_is_spoken_then_listening() -> None:
    h = Harness(greeting="Hello, this is the test line.")
    h.start()
    assert [a.text for a in h.of(act.TtsText)] == ["Hello, this is the test line."]
    assert h.engine.state is State.THINKING
    rid = h.reply_id
    h.tts(rid, 800)
    assert h.of(act.Play) and h.of(act.EndUtterance)[-1].utterance_id == rid
    h.play(rid, 800)
    assert h.engine.state is State.LISTENING
    assert h.engine.history[-1] == Message("assistant", "Hello, this is the test line.")


def test_end_of_turn_needs_endpoint_window_and_final() -> None:
    h = Harness(endpointing_ms=300)
    h.greet()
    h.frames(30, True)
    assert h.engine.state is State.USER_SPEAKING
    assert h.of(act.SttAudio)  # caller audio streams to the STT while they talk
    h.frames(14, False)  # 280 ms: not yet the endpoint
    assert not h.of(act.SttFinalize)
    h.frames(1, False)
    assert len(h.of(act.SttFinalize)) == 1
    assert h.engine.state is State.THINKING
    assert not h.of(act.StartLlm)  # no final yet: the LLM waits for it
    h.transcript("what time do you open", final=False)
    assert not h.of(act.StartLlm)
    h.transcript("what time do you open")
    start = h.last(act.StartLlm)
    assert start.messages[-1] == Message("user", "what time do you open")
    assert start.messages[0].role == "system"
    assert {t.name for t in start.tools} >= {"end_call", "send_dtmf"}


def test_speech_resuming_during_finalize_continues_the_turn() -> None:
    h = Harness(endpointing_ms=200)
    h.greet()
    h.frames(20, True)
    h.frames(10, False)
    h.frames(20, True)  # the caller goes on before the STT answered the finalize
    h.transcript("I would like")
    h.frames(10, False)
    assert len(h.of(act.SttFinalize)) == 2
    assert not h.of(act.StartLlm)  # the second final is still due
    h.transcript("an appointment")
    assert h.last(act.StartLlm).messages[-1] == Message("user", "I would like an appointment")
    assert len(h.of(act.StartLlm)) == 1


def test_speech_before_any_reply_audio_merges_into_one_turn() -> None:
    h = Harness(endpointing_ms=200)
    h.greet()
    h.say_turn("I would like")
    first = h.reply_id
    h.frames(20, True)  # 400 ms more: the caller was only pausing
    assert first in [a.reply_id for a in h.of(act.CancelReply)]
    h.frames(10, False)
    h.transcript("an appointment")
    assert h.last(act.StartLlm).messages[-1] == Message("user", "I would like an appointment")
    assert [m.role for m in h.last(act.StartLlm).messages].count("user") == 1


def test_early_end_of_utterance_final_ends_turn_at_the_endpoint() -> None:
    # A streaming STT may call the utterance complete before the VAD endpoint (Deepgram's
    # speech_final): no finalize round trip is needed then.
    h = Harness(endpointing_ms=300)
    h.greet()
    h.frames(20, True)
    h.frames(5, False)
    h.transcript("hello there")
    assert not h.of(act.StartLlm)
    h.frames(10, False)
    assert not h.of(act.SttFinalize)
    assert h.last(act.StartLlm).messages[-1].content == "hello there"


def test_noise_with_empty_transcript_is_not_a_turn() -> None:
    h = Harness()
    h.greet()
    h.frames(5, True)
    h.wait(0.4)
    h.transcript("")
    assert not h.of(act.StartLlm)
    assert h.engine.state is State.LISTENING


def test_missing_final_falls_back_to_interim_after_timeout() -> None:
    h = Harness(stt_final_timeout_s=1.0)
    h.greet()
    h.frames(20, True)
    h.transcript("are you open", final=False)
    h.wait(0.5)
    assert not h.of(act.StartLlm)
    h.wait(1.0)
    assert h.last(act.StartLlm).messages[-1].content == "are you open"


def test_reply_streams_clause_by_clause_and_marks_latency() -> None:
    h = Harness()
    h.greet()
    h.say_turn("when are you open")
    rid = h.reply_id
    h.llm("We're open from nine, ", "Monday to Friday. ", "On Saturday ", done=False)
    clauses = [a.text for a in h.of(act.TtsText) if a.reply_id == rid]
    assert clauses == ["We're open from nine,", "Monday to Friday."]  # the TTS starts before the end
    h.llm("from nine to one.")
    assert [a.text for a in h.of(act.TtsText) if a.reply_id == rid][-1] == "On Saturday from nine to one."
    h.tts(rid, 3000)
    h.play(rid, 3000)
    done = h.last(act.TurnDone).marks
    assert done.first_audio_out is not None and done.voice_to_voice() is not None
    assert done.overhead() is not None and done.overhead() >= 0
    full = "We're open from nine, Monday to Friday. On Saturday from nine to one."
    assert h.engine.history[-1].content == full


def test_reprompt_then_polite_hangup_after_silence() -> None:
    h = Harness(reprompt_after_s=3, hangup_after_s=8, reprompt_text="Still there?", hangup_text="Bye now.")
    h.greet()
    h.wait(2.9)
    assert not [a for a in h.of(act.TtsText) if a.text == "Still there?"]
    h.wait(0.2)
    assert [a for a in h.of(act.TtsText) if a.text == "Still there?"]
    rid = h.reply_id
    h.tts(rid, 1000)
    h.play(rid, 1000)
    h.wait(3.0)
    assert len([a for a in h.of(act.TtsText) if a.text == "Still there?"]) == 1  # once per silence
    h.wait(1.2)
    assert [a for a in h.of(act.TtsText) if a.text == "Bye now."]
    rid = h.reply_id
    h.tts(rid, 600)
    assert not h.of(act.Hangup)  # not before the line has been heard
    h.play(rid, 600)
    assert h.last(act.Hangup).reason == "silence"
    assert h.engine.ended and h.engine.end_reason == "silence"


def test_caller_speech_resets_the_silence_timer() -> None:
    h = Harness(reprompt_after_s=3, hangup_after_s=8, reprompt_text="Still there?")
    h.greet()
    h.wait(2.0)
    h.say_turn("hello")
    rid = h.reply_id
    h.llm("Hi.")
    h.tts(rid, 400)
    h.play(rid, 400)
    h.wait(2.5)
    assert not [a for a in h.of(act.TtsText) if a.text == "Still there?"]


def test_dtmf_reaches_the_llm_as_text() -> None:
    h = Harness(dtmf_collect_ms=500)
    h.greet()
    h.engine.on_dtmf(h.t, "1")
    h.engine.on_dtmf(h.t, "2")
    h.collect()
    assert not h.of(act.StartLlm)
    h.wait(0.6)
    assert h.last(act.StartLlm).messages[-1] == Message("user", "DTMF: 12")


def test_dtmf_hash_sends_at_once_and_cuts_the_agent_off() -> None:
    h = Harness()
    h.start()
    rid = h.reply_id
    h.tts(rid, 2000)
    h.play(rid, 400, finish=False)
    h.engine.on_dtmf(h.t, "3")
    h.engine.on_dtmf(h.t, "#")
    h.collect()
    assert h.of(act.ClearPlayback)
    assert h.last(act.StartLlm).messages[-1] == Message("user", "DTMF: 3#")


def test_maximum_call_length_says_goodbye_and_hangs_up() -> None:
    h = Harness(max_call_s=5, goodbye_text="Time is up, goodbye.")
    h.greet()
    h.say_turn("tell me a long story")
    h.llm("Once upon a time, ", done=False)
    h.wait(4.0)
    texts = [a.text for a in h.of(act.TtsText)]
    assert "Time is up, goodbye." in texts
    rid = h.reply_id
    h.tts(rid, 500)
    h.play(rid, 500)
    assert h.last(act.Hangup).reason == "max-duration"


def test_caller_hangup_ends_the_engine() -> None:
    h = Harness()
    h.start()
    h.engine.on_leg_ended(h.t, "bye")
    h.collect()
    assert h.engine.ended and h.engine.end_reason == "bye"
    assert h.of(act.CancelReply)


def test_empty_speech_final_before_the_words_final_does_not_drop_a_short_answer() -> None:
    """Issue 15, defect 3: Deepgram sends an empty speech_final in the gap after the last
    speech frame, before the final carrying "Yes."; the turn must wait for the words."""
    h = Harness()
    h.greet()
    h.frames(15, True)  # "yes"
    h.frames(3, False)
    h.transcript("", final=True, eou=True)  # the empty speech_final, words still unfinalized
    h.frames(h.settings.conversation.endpointing_ms // 20, False)
    assert h.of(act.SttFinalize), "the endpoint asks for the final instead of ending the turn"
    h.transcript("Yes.")
    assert h.last(act.StartLlm).messages[-1] == Message("user", "Yes.")


def test_empty_speech_final_after_finalized_words_still_ends_the_turn_early() -> None:
    h = Harness()
    h.greet()
    h.frames(30, True)
    h.transcript("I need an appointment", final=True, eou=False)
    h.frames(3, False)
    h.transcript("", final=True, eou=True)  # everything was finalized: a real end of utterance
    before = len(h.of(act.SttFinalize))
    h.frames(h.settings.conversation.endpointing_ms // 20, False)
    assert len(h.of(act.SttFinalize)) == before  # no Finalize round trip needed
    assert h.last(act.StartLlm).messages[-1] == Message("user", "I need an appointment")


def test_flux_end_of_turn_ends_the_turn_and_eager_hints_are_only_interims() -> None:
    """Flux: EagerEndOfTurn / TurnResumed arrive as non-final transcripts with an event (for an
    engine that prepares replies early); EndOfTurn is a final end of utterance."""
    from bridge.providers.base import EAGER_END_OF_TURN, TURN_RESUMED, Transcript

    h = Harness()
    h.greet()
    before = len(h.log)
    h.frames(20, True)
    h.engine.on_transcript(h.t, Transcript("Book a table", False, False, 0.0, EAGER_END_OF_TURN))
    h.frames(10, True)
    h.engine.on_transcript(h.t, Transcript("Book a table for two", False, False, 0.0, TURN_RESUMED))
    h.collect()
    h.frames(5, False)
    assert not h.of(act.StartLlm, before)  # not Flux, no preemption: the hints start nothing
    h.engine.on_transcript(h.t, Transcript("Book a table for two", True, True, 0.9))
    h.frames(h.settings.conversation.endpointing_ms // 20, False)
    assert h.last(act.StartLlm).messages[-1] == Message("user", "Book a table for two")


def test_digits_held_through_a_non_interruptible_greeting_set_no_past_deadline() -> None:
    """A key pressed during a greeting that may not be cut waits for the greeting's end; its
    collection deadline, long past meanwhile, is not the engine's next deadline (the driver
    would wake every few ms until the greeting ends), and the digits go once it has ended."""
    h = Harness(greeting_interruptible=False, dtmf_collect_ms=500,
                greeting="Welcome to the line. All calls are recorded.")
    h.start()
    rid = h.reply_id
    h.tts(rid, 3000)
    h.play(rid, 400, finish=False)
    h.engine.on_dtmf(h.t, "7")
    h.play(rid, 1600, finish=False)  # the collection deadline passed 1.1 s ago
    assert h.engine.next_deadline() > h.t
    assert not h.of(act.StartLlm)
    h.play(rid, 1000)  # the greeting ends
    assert h.engine.next_deadline() <= h.t
    h.wait(0.1)
    assert h.last(act.StartLlm).messages[-1] == Message("user", "DTMF: 7")
