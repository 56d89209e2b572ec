"""The level gate on a mixed recording (bench/background_talk.py): a caller at the nominal
phone level with a TV talking all the time underneath in another voice, 25 dB down for most
of the call and 15 then 10 dB down over the last requests, through the real VAD and Engine.
With the shipped defaults the TV alone opens no turn and no barge-in, and every request of
the caller (one of them 6 dB quieter) opens a turn; with the gate off the same line does not."""

from __future__ import annotations

import pytest

from bench.background_talk import MIXED, REQUESTS, Tracks, have_tools, make_tracks, run_scene, settings_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracks() -> Tracks:
    if not have_tools():
        pytest.skip("espeak-ng and sox are needed to make the recording")
    return make_tracks()


def test_background_talk_opens_no_turn_and_every_request_does(tracks: Tracks) -> None:
    out = run_scene(tracks, MIXED, settings_for())
    assert out.background_openings == []
    assert out.caller_opened == [True] * len(REQUESTS)
    assert out.tv_requests == 0
    # Every request reached the LLM as the caller said it, and nothing else did.
    assert [r.text for r in REQUESTS] == [text for text in dict.fromkeys(out.llm_requests)]


def test_without_the_gate_the_tv_becomes_caller_turns(tracks: Tracks) -> None:
    out = run_scene(tracks, MIXED, settings_for(gate_db=0))
    assert len(out.background_openings) >= 3
