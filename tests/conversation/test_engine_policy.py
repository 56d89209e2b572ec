"""One owner per policy, under a fake clock: the engine alone times its providers (one label
per failure kind, deadlines moved back when the driver's loop ran late), the heard position
comes in as PlaybackProgress, and actions carry the ids the driver needs."""

from __future__ import annotations

from typing import Any

from bridge.conversation import actions as act
from bridge.conversation.engine import State
from bridge.providers.base import Message
from tests.conversation.harness import FALLBACK, LOUD, Harness

REPLY = "We are open from nine to six. On Saturday we open at ten. We are closed on Sunday."


def _harness(llm: dict[str, Any] | None = None, tts: dict[str, Any] | None = None, **conv: Any) -> Harness:
    h = Harness(counts={"stt": 1, "llm": 2, "tts": 2}, **conv)
    s = h.settings
    s = s.model_copy(update={
        "llm": s.llm.model_copy(update=llm or {}),
        "tts": s.tts.model_copy(update=tts or {}),
    })
    h.engine.settings = h.settings = s
    return h


def _asked(h: Harness, text: str = "when are you open") -> str:
    h.greet()
    h.say_turn(text)
    return h.reply_id


def _failures(h: Harness, since: int = 0) -> list[act.ProviderFailed]:
    return h.of(act.ProviderFailed, since)


def _fails_after(h: Harness, seconds: float) -> list[tuple[str, str]]:
    """Frames for ``seconds`` (just short of it: nothing fails), then 100 ms more: the
    (kind, label) of each failure."""
    h.wait(seconds - 0.04)
    assert not _failures(h)
    h.wait(0.1)
    return [(f.kind, f.label) for f in _failures(h)]


# -- actions carry ids --------------------------------------------------------------------------


def test_start_llm_names_its_reply() -> None:
    h = _harness()
    rid = _asked(h)
    start = h.last(act.StartLlm)
    assert start.reply_id == rid
    h.llm("Let me check.", done=False)
    h.engine.on_llm_failed(h.t, start.stream_id, "retryable: openai: HTTP 503", "retryable")
    h.collect()
    failed = h.last(act.ProviderFailed)
    assert (failed.kind, failed.label) == ("llm", "retryable")  # the metric label, not parsed
    assert h.last(act.CancelReply).reply_id == rid
    assert h.last(act.StartLlm).reply_id == h.reply_id != rid


# -- the engine's deadlines, one label each -----------------------------------------------------


def test_first_token_deadline_gives_one_label_and_the_fallback() -> None:
    h = _harness(llm={"first_token_timeout_s": 1.0}, fallback_after_s=5.0)
    _asked(h)
    stream = h.last(act.StartLlm).stream_id
    assert _fails_after(h, 1.0) == [("llm", "first-token-timeout")]
    assert h.last(act.ProviderFailed).reason == "first-token-timeout"
    assert [a for a in h.of(act.Play) if a.pcm == FALLBACK], "no dead air: the fallback line plays"
    # the provider's own (backstop) error for the same round comes after: it is stale
    h.engine.on_llm_failed(h.t, stream, "retryable: openai: request timed out", "retryable")
    h.collect()
    assert len(_failures(h)) == 1


def test_llm_stall_after_the_first_token() -> None:
    h = _harness(llm={"stall_timeout_s": 1.0})
    _asked(h)
    h.llm("We are", done=False)
    h.wait(0.9)
    h.llm(" open", done=False)  # each token moves the deadline
    assert _fails_after(h, 1.0) == [("llm", "stall")]


def test_tts_first_byte_deadline() -> None:
    h = _harness(tts={"first_byte_timeout_s": 1.0})
    _asked(h)
    h.llm("We are open from nine to six. On", done=False)
    assert h.of(act.TtsText)
    assert _fails_after(h, 1.0) == [("tts", "first-byte-timeout")]


def test_tts_stall_once_the_text_has_ended() -> None:
    """Audio flowed, the text ended, then nothing: the engine's stall, not the provider's."""
    h = _harness(tts={"stall_timeout_s": 1.0})
    rid = _asked(h)
    h.llm(REPLY)
    h.tts(rid, 1000, done=False)
    h.wait(0.9)
    assert not _failures(h)
    h.engine.on_tts_audio(h.t, rid, LOUD * 5)  # more audio: the deadline moves
    h.collect()
    assert _fails_after(h, 1.0) == [("tts", "stall")]


def test_tts_stall_on_text_taken_after_its_last_audio() -> None:
    h = _harness(tts={"stall_timeout_s": 1.0}, llm={"stall_timeout_s": 30.0})
    rid = _asked(h)
    h.llm("We are open from nine to six. ", done=False)
    h.engine.on_tts_text_taken(h.t, rid, 0)
    h.engine.on_tts_audio(h.t, rid, LOUD * 50)
    h.collect()
    h.wait(3.0)  # the LLM is still writing: the TTS owes nothing, so nothing is timed
    assert not _failures(h)
    h.llm("On Saturday we open at ten. ", done=False)
    h.engine.on_tts_text_taken(h.t, rid, 1)  # taken after the last audio: audio is owed
    h.collect()
    assert _fails_after(h, 1.0) == [("tts", "stall")]


def test_a_late_loop_moves_the_deadlines_back() -> None:
    """The driver's loop stalled 2 s: the token that came in meanwhile is read after the stall
    and counts as in time; a provider that really is slow still fails."""
    h = _harness(llm={"first_token_timeout_s": 1.0}, fallback_after_s=10.0)
    _asked(h)
    h.wait(0.5)
    h.t += 2.0  # nothing ran for 2 s
    h.engine.on_loop_late(h.t, 2.0)
    h.engine.on_tick(h.t)
    h.collect()
    assert not _failures(h)
    h.llm("Nine to six.", done=False)  # read just after the stall
    assert not _failures(h)
    h.wait(4.0)  # then silent for longer than the stall deadline
    assert [(f.kind, f.label) for f in _failures(h)] == [("llm", "stall")]


def test_without_a_late_report_the_same_gap_fails_the_provider() -> None:
    h = _harness(llm={"first_token_timeout_s": 1.0}, fallback_after_s=10.0)
    _asked(h)
    h.wait(0.5)
    h.t += 2.0
    h.engine.on_tick(h.t)
    h.collect()
    assert [f.label for f in _failures(h)] == ["first-token-timeout"]


def test_a_late_loop_also_moves_the_stt_final_deadline() -> None:
    h = _harness()
    h.greet()
    h.frames(20, True)
    h.frames(h.settings.conversation.endpointing_ms // 20, False)
    assert h.engine.state is State.THINKING  # awaiting the STT's final
    h.t += h.settings.conversation.stt_final_timeout_s + 0.5
    h.engine.on_loop_late(h.t, h.settings.conversation.stt_final_timeout_s + 0.5)
    h.engine.on_tick(h.t)
    h.collect()
    assert h.engine.state is State.THINKING
    h.transcript("when are you open")
    assert h.last(act.StartLlm).messages[-1] == Message("user", "when are you open")


# -- the heard position is an input --------------------------------------------------------------


def _playing(h: Harness) -> str:
    rid = _asked(h)
    h.llm(REPLY)
    h.tts(rid, 6000)
    h.engine.on_playback_started(h.t, rid, h.t)
    h.collect()
    return rid


def test_playback_progress_drives_the_history_cut_on_barge_in() -> None:
    h = _harness(barge_in={"min_speech_ms": 100})
    rid = _playing(h)
    h.engine.on_playback_progress(h.t, rid, 2600)
    h.engine.on_playback_progress(h.t, "someone-else", 6000)  # another utterance's report
    h.frames(5, True)
    assert h.last(act.BargeIn).heard_ms == 2600
    assert h.engine.history[-1] == Message("assistant", "We are open from nine to six. On Saturday")
    rec = [a for a in h.of(act.Record) if a.event == "agent" and a.data.get("interrupted")]
    assert rec[-1].data["heard_ms"] == 2600
    # a report of the cancelled reply that was still on its way changes nothing
    h.engine.on_playback_progress(h.t, rid, 6000)
    assert h.engine.history[-1] == Message("assistant", "We are open from nine to six. On Saturday")


def test_no_report_yet_means_nothing_heard() -> None:
    h = _harness(barge_in={"min_speech_ms": 100})
    _playing(h)
    h.frames(5, True)
    assert h.last(act.BargeIn).heard_ms == 0
    assert h.engine.history[-1] == Message("user", "when are you open")


def test_playback_done_reports_the_position_too() -> None:
    h = _harness()
    rid = _playing(h)
    h.engine.on_playback_done(h.t, rid, 6000)
    h.collect()
    assert h.engine.reply is None and h.engine.history[-1].content == REPLY
