"""Tools and provider failures under a fake clock."""

from __future__ import annotations

from bridge.conversation import actions as act
from bridge.conversation.engine import TRANSFER_FAILED_LINE, State
from bridge.providers.base import Message, ToolCall
from tests.conversation.harness import FALLBACK, Harness


def _asked(h: Harness, text: str) -> str:
    h.greet()
    h.say_turn(text)
    return h.reply_id


def test_end_call_says_goodbye_then_hangs_up() -> None:
    h = Harness()
    rid = _asked(h, "that's all, goodbye")
    h.llm("Thanks for calling, goodbye!", ToolCall("c1", "end_call", {}))
    assert h.engine.history[-2].tool_calls[0].name == "end_call"
    assert h.engine.history[-1].role == "tool"
    h.tts(rid, 1500)
    assert not h.of(act.Hangup)
    h.play(rid, 1500)
    assert h.last(act.Hangup).reason == "agent-ended"
    assert h.engine.ended


def test_end_call_without_text_speaks_the_configured_goodbye() -> None:
    h = Harness(goodbye_text="Goodbye from the test.")
    rid = _asked(h, "bye")
    h.llm(ToolCall("c1", "end_call", {}))
    assert [a.text for a in h.of(act.TtsText) if a.reply_id == rid] == ["Goodbye from the test."]


def test_transfer_after_the_announcement() -> None:
    h = Harness(transfer_target="sip:desk@example.com")
    rid = _asked(h, "operator please")
    assert "transfer_call" in {t.name for t in h.last(act.StartLlm).tools}
    h.llm("Putting you through.", ToolCall("t1", "transfer_call", {}))
    h.tts(rid, 800)
    h.play(rid, 800)
    assert h.last(act.Transfer).target == "sip:desk@example.com"
    h.engine.on_transfer_result(h.t, True)
    h.collect()
    assert h.engine.end_reason == "transferred"


def test_failed_transfer_is_told_and_the_call_goes_on() -> None:
    h = Harness(transfer_target="+911234567890")
    rid = _asked(h, "operator")
    h.llm(ToolCall("t1", "transfer_call", {}))
    h.tts(rid, 800)
    h.play(rid, 800)
    h.engine.on_transfer_result(h.t, False)
    h.collect()
    assert h.last(act.TtsText).text == TRANSFER_FAILED_LINE
    assert not h.engine.ended


def test_transfer_not_offered_without_a_target() -> None:
    h = Harness(transfer_target="")
    _asked(h, "operator")
    assert "transfer_call" not in {t.name for t in h.last(act.StartLlm).tools}
    h.llm("Let me transfer you.", ToolCall("t1", "transfer_call", {}))
    assert h.engine.history[-1].content.startswith("error: no tool")
    assert not h.of(act.Transfer)


def test_send_dtmf_runs_and_the_model_continues_with_the_result() -> None:
    h = Harness()
    rid = _asked(h, "press one for me")
    first = h.llm("Pressing one.", ToolCall("d1", "send_dtmf", {"digits": "1"}))
    run = h.last(act.RunTool)
    assert run.call.arguments == {"digits": "1"} and run.reply_id == rid
    # the reply stays open for the model's next round
    assert rid not in [a.reply_id for a in h.of(act.EndTts)]
    h.engine.on_tool_result(h.t, rid, "d1", "sent 1")
    h.collect()
    second = h.last(act.StartLlm)
    assert second.stream_id != first
    assert second.messages[-1] == Message("tool", "sent 1", tool_call_id="d1")
    h.llm("Done.")
    assert h.last(act.EndTts).reply_id == rid
    assert [a.text for a in h.of(act.TtsText) if a.reply_id == rid] == ["Pressing one.", "Done."]


def test_llm_failure_plays_fallback_and_fails_over() -> None:
    h = Harness(counts={"stt": 1, "llm": 2, "tts": 1})
    rid = _asked(h, "hello")
    stream = h.last(act.StartLlm).stream_id
    h.engine.on_llm_failed(h.t, stream, "APIConnectionError: refused")
    h.collect()
    assert h.last(act.ProviderFailed).kind == "llm"
    fallback = [a for a in h.of(act.Play) if a.pcm == FALLBACK]
    assert fallback, "the fallback line plays at once"
    assert h.last(act.UseProvider) == act.UseProvider("llm", 1)
    retry = h.last(act.StartLlm)
    assert retry.stream_id != stream and retry.messages[-1] == Message("user", "hello")
    assert h.reply_id != rid
    # only one fallback per reply, even if the next provider is slow too
    h.wait(2.2)
    assert len([a for a in h.of(act.Play) if a.pcm == FALLBACK]) == 1
    h.llm("Hi there.")
    assert h.last(act.TtsText).text == "Hi there."


def test_last_llm_failing_hangs_up_after_the_fallback() -> None:
    h = Harness(counts={"stt": 1, "llm": 1, "tts": 1})
    _asked(h, "hello")
    h.engine.on_llm_failed(h.t, h.last(act.StartLlm).stream_id, "boom")
    h.collect()
    fb = [a for a in h.of(act.Play) if a.pcm == FALLBACK][-1].utterance_id
    assert not h.of(act.Hangup)
    h.engine.on_playback_done(h.t, fb)
    h.collect()
    assert h.last(act.Hangup).reason == "provider-failure"


def test_llm_silent_past_first_token_timeout_fails_over() -> None:
    h = Harness(counts={"stt": 1, "llm": 2, "tts": 1})
    llm = h.settings.llm.model_copy(update={"first_token_timeout_s": 1.5})
    h.engine.settings = h.settings = h.settings.model_copy(update={"llm": llm})
    _asked(h, "hello")
    h.wait(1.4)
    assert not h.of(act.ProviderFailed)
    h.wait(0.2)
    assert h.last(act.ProviderFailed).reason == "first-token-timeout"
    assert h.last(act.UseProvider) == act.UseProvider("llm", 1)


def test_dead_air_fallback_within_two_seconds() -> None:
    h = Harness(fallback_after_s=2.0)
    _asked(h, "hello")
    h.llm("Thinking hard.", done=False)  # text, but the TTS has not produced a byte
    h.wait(1.9)
    assert not [a for a in h.of(act.Play) if a.pcm == FALLBACK]
    h.wait(0.2)
    assert [a for a in h.of(act.Play) if a.pcm == FALLBACK]


def test_tts_failure_restarts_the_reply_on_the_next_tts() -> None:
    h = Harness(counts={"stt": 1, "llm": 1, "tts": 2})
    rid = _asked(h, "hello")
    h.llm("Hello there.")
    h.engine.on_tts_failed(h.t, rid, "ApiError: 500")
    h.collect()
    assert h.last(act.UseProvider) == act.UseProvider("tts", 1)
    assert h.last(act.StartTts).reply_id != rid
    assert h.last(act.StartLlm).messages[-1] == Message("user", "hello")


def test_stt_failure_fails_over_and_keeps_listening() -> None:
    h = Harness(counts={"stt": 2, "llm": 1, "tts": 1})
    h.greet()
    h.frames(10, True)
    h.engine.on_stt_failed(h.t, "ConnectionClosed")
    h.collect()
    assert h.last(act.UseProvider) == act.UseProvider("stt", 1)
    fb = [a for a in h.of(act.Play) if a.pcm == FALLBACK][-1].utterance_id
    h.engine.on_playback_done(h.t, fb)
    h.collect()
    assert h.engine.state is State.LISTENING and not h.engine.ended
    h.say_turn("hello again")
    assert h.last(act.StartLlm).messages[-1].content == "hello again"


def test_llm_greeting_when_no_greeting_line_is_configured() -> None:
    h = Harness(greeting="")
    h.start()
    start = h.last(act.StartLlm)
    assert [m.role for m in start.messages] == ["system"]
    h.llm("Good morning, dental practice.")
    assert [a.text for a in h.of(act.TtsText)] == ["Good morning,", "dental practice."]
