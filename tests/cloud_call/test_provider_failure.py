"""Provider failure during a SIP call on the cloud providers: the LLM answers HTTP 500. The
caller hears the pre-synthesised fallback line within 2 s of the end of their turn; with a
second LLM configured the answer follows and the call goes on, with none left the agent hangs
up after the line. Provider health and failures show in /metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devkit.fakes import FakeCloud
from devkit.fakes.openai import ToolReply
from devkit.fakes.tone import MS_PER_CHAR

from .calls import CallResult, caller_line, place_call, timeline
from .conftest import FALLBACK, GREETING, CloudDaemon

pytestmark = [pytest.mark.sipp]

Q1, A1 = "Where are you located?", "We are at twelve Main Street."
Q2, A2 = "Thank you goodbye.", "You are welcome. Goodbye!"
FALLBACK_WITHIN_S = 2.0  # DESIGN.md: a spoken fallback line within 2 s, never dead air


def packets_for(text: str) -> float:
    return len(text) * MS_PER_CHAR / 20


def samples(metrics: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def llm_failures(metrics: str) -> float:
    found = samples(metrics, "voice_bridge_provider_failures_total")
    return sum(v for k, v in found.items() if dict(k)["kind"] == "llm" and dict(k)["provider"] == "openai")


def health(metrics: str, kind: str, provider: str) -> float | None:
    return samples(metrics, "voice_bridge_provider_healthy").get((("kind", kind), ("provider", provider)))


def first_answer(call: CallResult, after_s: float) -> float:
    """Seconds from ``after_s`` (the end of the caller's line) to the next agent audio."""
    starts = [b.start for b in call.bursts() if b.start > after_s]
    assert starts, call.explain()
    return starts[0] - after_s


def test_llm_500_plays_the_fallback_line_then_the_next_llm_answers(cd: CloudDaemon, tmp_path: Path) -> None:
    lines = [caller_line(q, tmp_path, f"q{i}") for i, q in enumerate((Q1, Q2))]

    def script(cloud: FakeCloud) -> None:
        cloud.deepgram.script.extend([Q1, Q2])
        cloud.openai.script.extend([A1, ToolReply("end_call", {}, text_before=A2)])
        cloud.openai.faults.status, cloud.openai.faults.status_times = 500, 1

    cd.cloud.do(script)
    before = cd.metrics()
    q1_end = 2.0 + len(lines[0]) / 16000
    q2_at = q1_end + 3.5
    pcm = timeline([(2.0, lines[0]), (q2_at, lines[1])], tail_s=1.0)
    call = place_call(cd.daemon, cd.transcripts, tmp_path, pcm, wait_ms=15_000)
    after = cd.metrics()
    why = call.explain()
    assert call.sipp.returncode == 0, why

    failures = call.events("provider_failure")
    assert [(f["kind"], f["provider"]) for f in failures] == [("llm", "openai")], why
    assert "HTTP 500" in failures[0]["reason"], why
    assert [f["then"] for f in call.events("fallback")] == ["continue"], why
    assert [e["text"] for e in call.events("user")] == [Q1, Q2], why
    agent = [(a["text"], a["interrupted"]) for a in call.events("agent")]
    assert agent == [(GREETING, False), (A1, False), (A2, False)], why
    assert call.events("call_end")[-1]["reason"] == "agent-ended", why
    rejected = cd.cloud.do(lambda c: [e.data["status"] for e in c.openai.journal.of("rejected")])
    assert rejected == [500], why

    # The fallback line, then the answer from the second LLM right behind it, in time.
    assert first_answer(call, q1_end) < FALLBACK_WITHIN_S, why
    # Every packet of both before the caller's next question (a loop stall of the daemon's on a
    # loaded box can split the reply in two bursts at the 100 ms gap rule: counted together)
    reply = [b for b in call.bursts() if q1_end < b.start < q2_at]
    expected = packets_for(FALLBACK) + packets_for(A1)
    assert reply and reply[-1].end - reply[0].start < expected * 0.02 + 1.0, why  # one reply
    assert sum(b.packets for b in reply) == pytest.approx(expected, abs=6), why

    assert llm_failures(after) - llm_failures(before) == 1, after
    # A 500 is a failure a retry may cure: the reason label says so (a small, fixed set).
    reasons = {dict(k)["reason"] for k in samples(after, "voice_bridge_provider_failures_total")}
    known = {"retryable", "fatal", "timeout", "network", "error", "first-token-timeout", "stall",
             "first-byte-timeout"}
    assert "retryable" in reasons and reasons <= known, reasons
    # The turn that followed succeeded: the provider is marked healthy again.
    assert health(after, "llm", "openai") == 1, after


def test_llm_down_plays_the_fallback_line_and_hangs_up(cd: CloudDaemon, tmp_path: Path) -> None:
    line = caller_line(Q1, tmp_path, "q1")

    def script(cloud: FakeCloud) -> None:
        cloud.deepgram.script.append(Q1)
        cloud.openai.faults.status = 503  # every request, both configured LLMs

    cd.cloud.do(script)
    before = cd.metrics()
    q1_end = 2.0 + len(line) / 16000
    pcm = timeline([(2.0, line)], tail_s=4.0)
    call = place_call(cd.daemon, cd.transcripts, tmp_path, pcm, wait_ms=12_000)
    after = cd.metrics()
    why = call.explain()
    assert call.sipp.returncode == 0, why

    failures = [(f["kind"], f["provider"]) for f in call.events("provider_failure")]
    assert failures == [("llm", "openai")] * 2, why
    assert call.events("fallback")[-1]["then"] == "hangup", why
    assert call.events("call_end")[-1]["reason"] == "provider-failure", why
    assert [a["text"] for a in call.events("agent")] == [GREETING], why

    # The caller hears the line (once: the first attempt's line is cut as the second fails too)
    # within 2 s of the end of their turn; then the agent hangs up (SIPp got our BYE).
    assert first_answer(call, q1_end) < FALLBACK_WITHIN_S, why
    bursts = [b for b in call.bursts() if b.start > q1_end]
    assert len(bursts) == 1, why
    assert bursts[0].packets == pytest.approx(packets_for(FALLBACK), abs=4), why
    assert "receive timeout" not in call.sipp.errors, why  # the BYE came from the daemon

    assert llm_failures(after) - llm_failures(before) == 2, after
    assert health(after, "llm", "openai") == 0, after
    assert health(after, "stt", "deepgram") == 1, after


def test_tts_socket_drop_fails_over_to_the_http_stream(cd: CloudDaemon, tmp_path: Path) -> None:
    """The stream-input WebSocket dies before its first audio: the fallback line (synthesised
    at start-up) covers the gap, the reply starts over and the ElevenLabs HTTP stream speaks it.

    The greeting goes out as usual; every socket the answer is sent on is cut by the fake,
    whichever spare it is (the fault is keyed on the answer's text)."""
    line = caller_line(Q1, tmp_path, "q1")
    answer = "We are at twelve Main Street. Goodbye!"

    def script(cloud: FakeCloud) -> None:
        cloud.deepgram.script.append(Q1)
        # the reply starts over after the failure: the LLM is asked a second time
        cloud.openai.script.extend([ToolReply("end_call", {}, text_before=answer)] * 2)
        # every stream-input socket that gets the answer is cut before any audio, whenever it
        # was opened (the shared daemon may hold more than one spare from earlier tests)
        cloud.elevenlabs.ws_drop_text = "We are at"  # the answer's first clause

    cd.cloud.do(script)
    before = cd.metrics()
    pcm = timeline([(2.0, line)], tail_s=2.0)
    call = place_call(cd.daemon, cd.transcripts, tmp_path, pcm, wait_ms=12_000)
    after = cd.metrics()
    why = call.explain()
    assert call.sipp.returncode == 0, why

    failures = [(f["kind"], f["provider"]) for f in call.events("provider_failure")]
    assert failures == [("tts", "elevenlabs-ws")], why
    assert [f["then"] for f in call.events("fallback")] == ["continue"], why
    agent = [(a["text"], a["interrupted"]) for a in call.events("agent")]
    assert agent == [(GREETING, False), (answer, False)], why
    assert call.events("call_end")[-1]["reason"] == "agent-ended", why

    journal = cd.cloud.do(lambda c: [(e.kind, dict(e.data)) for e in c.elevenlabs.journal.events])
    assert any(kind == "dropped" for kind, _ in journal), journal
    http = [d["text"] for kind, d in journal if kind == "request" and not d.get("ws")]
    assert " ".join(http) == answer, journal  # one request per clause
    assert cd.cloud.do(lambda c: c.openai.journal.count("request")) == 2, why

    # The caller heard the greeting, then the fallback line with the answer right behind it.
    q1_end = 2.0 + len(line) / 16000
    bursts = call.bursts()
    assert len(bursts) == 2, why
    assert bursts[0].packets == pytest.approx(packets_for(GREETING), abs=4), why
    assert first_answer(call, q1_end) < FALLBACK_WITHIN_S, why
    assert bursts[1].packets == pytest.approx(packets_for(FALLBACK) + packets_for(answer), abs=6), why

    def ws_failures(metrics: str) -> float:
        found = samples(metrics, "voice_bridge_provider_failures_total")
        return sum(v for k, v in found.items() if dict(k)["provider"] == "elevenlabs-ws")

    assert ws_failures(after) - ws_failures(before) == 1, after
    # the turn completed on the HTTP stream: that one is healthy, the WebSocket client is not
    assert health(after, "tts", "elevenlabs") == 1, after
    assert health(after, "tts", "elevenlabs-ws") == 0, after
