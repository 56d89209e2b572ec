"""The level gate on a mixed recording (bench/background_talk.py): a caller at the nominal
phone level with a TV talking all the time underneath in another voice, 25 dB down for most
of the call and 15 then 10 dB down over the last requests, through the real VAD and Engine.
With the shipped defaults a TV 20 dB down opens no turn and no barge-in and every request of
the caller (one of them 6 dB quieter) opens a turn; with the gate at 8 dB the same holds for
the mixed line (TV 15 and 10 dB down); with the gate off the TV becomes caller turns."""

from __future__ import annotations

import pytest

from bench.background_talk import MIXED, REQUESTS, Tracks, have_tools, make_tracks, run_scene, settings_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracks() -> Tracks:
    if not have_tools():
        pytest.skip("espeak-ng and sox are needed to make the recording")
    return make_tracks()


@pytest.mark.parametrize(
    ("level", "gate_db"), [(20.0, None), (MIXED, 8.0)], ids=["defaults-20dB", "gate8-mixed"]
)
def test_background_talk_opens_no_turn_and_every_request_does(
    tracks: Tracks, level: float | list[tuple[float, float]], gate_db: float | None
) -> None:
    out = run_scene(tracks, level, settings_for(gate_db))
    assert out.background_openings == []
    assert out.caller_opened == [True] * len(REQUESTS)
    assert out.tv_requests == 0
    # Every request reached the LLM as the caller said it, and nothing else did.
    assert [r.text for r in REQUESTS] == [text for text in dict.fromkeys(out.llm_requests)]


def test_without_the_gate_the_tv_becomes_caller_turns(tracks: Tracks) -> None:
    out = run_scene(tracks, MIXED, settings_for(gate_db=0))
    assert len(out.background_openings) >= 3
