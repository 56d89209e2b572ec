"""Split turns under a fake clock: a caller who pauses inside one request and goes on within
merge_window_ms gets one combined user turn, whether or not the agent had started speaking."""

from __future__ import annotations

from bridge.conversation import actions as act
from bridge.providers.base import Message
from tests.conversation.harness import Harness


def _first_part(h: Harness) -> str:
    h.greet()
    h.say_turn("I would like to book")
    return h.reply_id


def test_split_turn_merged_before_the_agent_started() -> None:
    h = Harness(barge_in={"merge_window_ms": 1000, "min_speech_ms": 200})
    rid = _first_part(h)
    h.llm("Sure, what would you like to book?", done=False)
    before = len(h.log)
    h.frames(5, False)
    h.frames(12, True)  # the rest of the request, 400 ms after the first part ended
    assert act.CancelReply(rid) in h.log[before:] and not h.of(act.BargeIn, before)
    assert [a for a in h.of(act.Record, before) if a.event == "turn_merged"]
    h.frames(15, False)
    h.transcript("a table for two tonight")
    msgs = h.last(act.StartLlm).messages
    assert msgs[-1] == Message("user", "I would like to book a table for two tonight")
    assert msgs[-2].role == "assistant" and msgs[-2].content.startswith("Hello")  # the greeting


def test_split_turn_merged_after_the_agent_started() -> None:
    h = Harness(barge_in={"merge_window_ms": 1000, "min_speech_ms": 200, "pause_after_ms": 40})
    rid = _first_part(h)
    h.llm("Sure, what would you like to book?")
    h.tts(rid, 2000)
    h.play(rid, 200, finish=False)  # the agent has said a word or two
    before = len(h.log)
    h.play(rid, 300, speech=True, finish=False)
    assert h.of(act.PausePlayback, before) and act.CancelReply(rid) in h.log[before:]
    assert not h.of(act.BargeIn, before)
    assert h.heard[rid] == 240  # paused 40 ms into the caller's speech
    h.frames(15, False)
    h.transcript("a table for two tonight")
    msgs = h.last(act.StartLlm).messages
    assert msgs[-1] == Message("user", "I would like to book a table for two tonight")
    assert all("what would you like" not in m.content for m in msgs)
    merged = [a for a in h.of(act.Record, before) if a.event == "turn_merged"]
    assert merged and merged[0].data["first_part"] == "I would like to book"
    heard = [a for a in h.of(act.Record, before) if a.event == "agent"]
    assert heard and heard[0].data["interrupted"] and heard[0].data["heard_ms"] == 240  # on record


def test_speech_after_the_window_is_an_ordinary_barge_in() -> None:
    h = Harness(barge_in={"merge_window_ms": 1000, "min_speech_ms": 200})
    rid = _first_part(h)
    h.llm("Sure. What would you like to book? We have tables and rooms.")
    h.tts(rid, 4000)
    h.play(rid, 1500, finish=False)
    before = len(h.log)
    h.play(rid, 300, speech=True, finish=False)
    assert h.of(act.BargeIn, before)
    assert not [a for a in h.of(act.Record, before) if a.event == "turn_merged"]
    assert h.engine.history[-2] == Message("user", "I would like to book")
    assert h.engine.history[-1].role == "assistant"


def test_merge_off() -> None:
    h = Harness(barge_in={"merge_window_ms": 0, "min_speech_ms": 200})
    rid = _first_part(h)
    h.llm("Sure, what would you like to book?")
    h.tts(rid, 2000)
    h.play(rid, 200, finish=False)
    before = len(h.log)
    h.play(rid, 300, speech=True, finish=False)
    assert h.of(act.BargeIn, before)
