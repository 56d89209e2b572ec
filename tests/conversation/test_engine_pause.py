"""Pause-on-onset barge-in under a fake clock: the agent's playout pauses on the first frames
of caller speech, then is cleared (confirmed barge-in) or resumed where it paused (a cough)."""

from __future__ import annotations

from bridge.conversation import actions as act
from bridge.providers.base import Message
from tests.conversation.harness import FRAME_S, Harness

REPLY = "We are open from nine to six. On Saturday we open at ten. We are closed on Sunday."


def _answering(h: Harness) -> str:
    h.greet()
    h.say_turn("when are you open")
    rid = h.reply_id
    h.llm(REPLY)
    h.tts(rid, 6000)  # three clauses, 2 s each
    return rid


def _index(h: Harness, kind: type, since: int) -> int:
    return next(i for i, a in enumerate(h.log[since:], since) if isinstance(a, kind))


def test_playout_pauses_on_onset_and_clears_once_confirmed() -> None:
    h = Harness(barge_in={"min_speech_ms": 250, "pause_after_ms": 40})
    rid = _answering(h)
    h.play(rid, 2600, finish=False)
    before = len(h.log)
    h.play(rid, 20, speech=True, finish=False)
    assert not h.of(act.PausePlayback, before)
    h.play(rid, 20, speech=True, finish=False)  # 40 ms of speech: the agent stops now
    assert len(h.of(act.PausePlayback, before)) == 1 and not h.of(act.ClearPlayback, before)
    assert h.heard[rid] == 2640
    h.play(rid, 200, speech=True, finish=False)  # 240 ms: not yet confirmed, still paused
    assert not h.of(act.ClearPlayback, before) and h.heard[rid] == 2640
    h.frames(1, True)  # 260 ms: confirmed; the queue is dropped
    assert _index(h, act.PausePlayback, before) < _index(h, act.ClearPlayback, before)
    assert h.last(act.BargeIn).heard_ms == 2640  # nothing was heard after the pause
    assert h.engine.history[-1] == Message("assistant", "We are open from nine to six. On Saturday")
    assert not h.of(act.ResumePlayback, before)


def test_false_interruption_resumes_where_it_paused_and_loses_no_words() -> None:
    h = Harness(barge_in={"min_speech_ms": 250, "pause_after_ms": 40, "max_gap_ms": 200})
    rid = _answering(h)
    h.play(rid, 1000, finish=False)
    before = len(h.log)
    h.play(rid, 160, speech=True, finish=False)  # a 160 ms cough
    cough_end = h.t
    assert h.of(act.PausePlayback, before) and h.heard[rid] == 1040
    resumed_at = None
    for _ in range(30):
        h.play(rid, 20, finish=False)
        if h.of(act.ResumePlayback, before):
            resumed_at = h.t
            break
    assert resumed_at is not None and resumed_at - cough_end <= 0.3 + FRAME_S / 2
    assert not h.of(act.ClearPlayback, before) and not h.of(act.CancelReply, before)
    assert h.heard[rid] == 1040  # it resumes at the very frame it paused on
    rec = [a for a in h.of(act.Record, before) if a.event == "false_interruption"]
    assert rec and rec[0].data["speech_ms"] == 160
    h.play(rid, 6000 - 1040)  # the rest plays out
    assert h.heard[rid] == 6000
    assert h.engine.history[-1] == Message("assistant", REPLY)  # heard in full, recorded in full
    assert not h.of(act.StartLlm, before)


def test_backchannel_pauses_then_resumes() -> None:
    h = Harness(barge_in={"min_speech_ms": 200, "min_words": 1, "pause_after_ms": 40})
    rid = _answering(h)
    h.play(rid, 1000, finish=False)
    before = len(h.log)
    h.play(rid, 100, speech=True, finish=False)
    h.transcript("mm-hm", final=False)
    h.play(rid, 200, speech=True, finish=False)  # long enough, but only a backchannel word
    assert h.of(act.PausePlayback, before) and not h.of(act.ClearPlayback, before)
    h.play(rid, 300, finish=False)
    assert h.of(act.ResumePlayback, before) and not h.of(act.ClearPlayback, before)
    assert h.engine.reply is not None and h.engine.reply.id == rid


def test_reply_that_ends_while_paused_leaves_the_leg_playing() -> None:
    h = Harness(barge_in={"min_speech_ms": 250, "pause_after_ms": 40})
    rid = _answering(h)
    h.play(rid, 5960, finish=False)
    before = len(h.log)
    h.frames(2, True)  # paused, with the last frame already out
    assert h.of(act.PausePlayback, before)
    h.engine.on_playback_done(h.t, rid)
    h.collect()
    assert h.of(act.ResumePlayback, before) and not h.paused


def test_no_pause_when_disabled() -> None:
    h = Harness(barge_in={"min_speech_ms": 250, "pause_on_onset": False})
    rid = _answering(h)
    h.play(rid, 1000, finish=False)
    before = len(h.log)
    h.play(rid, 200, speech=True, finish=False)
    assert not h.of(act.PausePlayback, before)


def test_by_default_the_first_speech_frame_pauses_and_a_one_frame_blip_resumes_in_place() -> None:
    """pause_after_ms defaults to one frame (20 ms): the agent stops on the first frame the
    VAD (and echo guard and level gate) calls the caller's speech; a blip that goes no
    further resumes it where it stopped after max_gap_ms, nothing lost or repeated."""
    h = Harness()
    assert h.engine.conv.barge_in.pause_after_ms == 20
    rid = _answering(h)
    h.play(rid, 1000, finish=False)
    before = len(h.log)
    h.play(rid, 20, speech=True, finish=False)
    assert len(h.of(act.PausePlayback, before)) == 1 and h.heard[rid] == 1020
    h.play(rid, 20 * 15, finish=False)
    assert h.of(act.ResumePlayback, before) and not h.of(act.ClearPlayback, before)
    h.play(rid, 6000 - h.heard[rid])
    assert h.heard[rid] == 6000
    assert h.engine.history[-1] == Message("assistant", REPLY)
