"""A full call over SIP on the cloud providers: SIPp calls the daemon, whose Deepgram, OpenAI
and ElevenLabs clients (the real SDKs) talk to the fakes. The caller hears the agent, the
transcript file holds the turns, and a barge-in mid-reply truncates the history."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit.fakes import FakeCloud
from devkit.fakes.openai import ToolReply
from devkit.fakes.tone import MS_PER_CHAR

from .calls import caller_line, place_call, timeline
from .conftest import GREETING, CloudDaemon

pytestmark = [pytest.mark.sipp]

Q1, A1 = "Where are you located?", "We are at twelve Main Street."
Q2 = "What are your opening hours?"
A2 = (
    "We open at nine in the morning and close at six in the evening on weekdays. "
    "On Saturdays we open at ten and close at four. On Sundays and public holidays we are closed. "
    "During the summer months we stay open one hour longer on Thursdays and Fridays."
)
Q3 = "Wait what about parking?"
A3 = "There is free parking behind the shop. Goodbye!"
TONE_RMS = 8000 / 2**0.5  # the fake TTS speaks a full-scale 440 Hz tone at amplitude 8000


def packets_for(text: str) -> float:
    return len(text) * MS_PER_CHAR / 20


def test_call_on_cloud_providers_with_barge_in(cd: CloudDaemon, tmp_path: Path) -> None:
    lines = [caller_line(q, tmp_path, f"q{i}") for i, q in enumerate((Q1, Q2, Q3))]

    def script(cloud: FakeCloud) -> None:
        cloud.deepgram.script.extend([Q1, Q2, Q3])
        cloud.openai.script.extend([A1, A2, ToolReply("end_call", {"reason": "done"}, text_before=A3)])

    cd.cloud.do(script)
    # The long answer starts about 0.3 s after Q2 ends and lasts 7 s; Q3 cuts in 2 s into it.
    q2_at = 5.5
    q3_at = q2_at + len(lines[1]) / 16000 + 2.3
    q3_end = q3_at + len(lines[2]) / 16000
    pcm = timeline([(2.0, lines[0]), (q2_at, lines[1]), (q3_at, lines[2])], tail_s=1.0)
    call = place_call(cd.daemon, cd.transcripts, tmp_path, pcm, wait_ms=20_000)
    why = call.explain()
    assert call.sipp.returncode == 0, why

    # The transcript file: every turn, the long answer cut where the caller came in.
    assert [e["text"] for e in call.events("user")] == [Q1, Q2, Q3], why
    agent = call.events("agent")
    assert [a["purpose"] for a in agent] == ["greeting", "answer", "answer", "answer"], why
    greeting, first, cut, last = agent
    assert (greeting["text"], greeting["interrupted"]) == (GREETING, False), why
    assert (first["text"], first["interrupted"]) == (A1, False), why
    assert cut["interrupted"] is True and cut["full_text"] == A2, why
    assert cut["text"] and A2.startswith(cut["text"]) and len(cut["text"]) < len(A2) / 2, why
    assert (last["text"], last["interrupted"]) == (A3, False), why
    assert [t["name"] for t in call.events("tool_call")] == ["end_call"], why
    assert call.events("call_end")[-1]["reason"] == "agent-ended", why
    assert len(call.events("latency")) == 3, why

    # The history the LLM got next holds only what the caller heard of the long answer.
    requests = cd.cloud.do(lambda c: [e.data["body"] for e in c.openai.journal.of("request")])
    assert len(requests) == 3, why
    assistant = [m["content"] for m in requests[2]["messages"] if m["role"] == "assistant"]
    assert assistant == [GREETING, A1, cut["text"]], why
    assert requests[2]["messages"][-1] == {"role": "user", "content": Q3}, why

    # On the wire: the agent's voice reached the caller, utterance by utterance, and the long
    # answer stopped while the caller was cutting in, after as much audio as the history says.
    bursts = call.bursts()
    assert len(bursts) == 4, why
    for burst in bursts:
        assert burst.rms == pytest.approx(TONE_RMS, rel=0.1), why
    assert bursts[0].packets == pytest.approx(packets_for(GREETING), abs=4), why
    assert bursts[1].packets == pytest.approx(packets_for(A1), abs=4), why
    assert bursts[3].packets == pytest.approx(packets_for(A3), abs=4), why
    assert bursts[2].packets < packets_for(A2) / 2, why
    assert bursts[2].packets * 20 == pytest.approx(cut["heard_ms"], abs=60), why
    assert q3_at < bursts[2].end < q3_end, why

    # The providers were used telephony-native: mu-law 8 kHz both ways, text streamed to TTS.
    dg = cd.cloud.do(lambda c: c.deepgram.journal.of("request")[0].data["query"])
    assert (dg["encoding"], dg["sample_rate"]) == ("mulaw", "8000"), dg
    tts = cd.cloud.do(lambda c: [e.data for e in c.elevenlabs.journal.of("request")])
    assert tts and all(r.get("ws") and r["output_format"] == "ulaw_8000" for r in tts), tts
