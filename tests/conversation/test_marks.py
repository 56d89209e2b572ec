"""TurnMarks.as_dict: every mark in ms after user_speech_end (the benches split a turn into
stages from them: bench/voice_to_voice.py STAGES)."""

from __future__ import annotations

from bridge.conversation.marks import TurnMarks


def test_every_mark_is_reported_after_the_end_of_speech() -> None:
    marks = TurnMarks(user_speech_end=10.0, turn_end=10.5, stt_final=10.5, llm_start=10.5,
                      llm_first_token=10.85, first_clause=10.9, tts_first_byte=11.02,
                      first_audio_out=11.03)
    out = marks.as_dict()
    assert out["turn_end"] == 500.0
    assert out["llm_start"] == 500.0
    assert out["llm_first_token"] == 850.0
    assert out["voice_to_voice"] == 1030.0
    # the LLM's 350 ms and the TTS's 120 ms are provider waits; the 10 ms after is the bridge's
    assert out["bridge_overhead"] == 10.0


def test_a_preempted_reply_starts_its_llm_before_the_turn_ends() -> None:
    marks = TurnMarks(user_speech_end=10.0, turn_end=10.5, stt_final=10.5, llm_start=10.1,
                      llm_first_token=10.45, first_clause=10.47, tts_first_byte=10.6,
                      first_audio_out=10.61, preempted=True)
    out = marks.as_dict()
    assert out["llm_start"] == 100.0
    assert out["llm_start"] < out["turn_end"]
    assert out["preempted"] == 1.0
