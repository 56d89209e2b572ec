"""run_conversation end to end on the in-memory leg under a manual clock: real VAD on real
(espeak) caller speech, in-test STT/LLM/TTS fakes, transcript file and metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bridge.callmodel import CallInfo
from bridge.conversation import run_conversation
from bridge.conversation.transcript import TranscriptWriter
from bridge.conversation.vad import create_vad
from bridge.metrics import BARGE_INS, REGISTRY
from bridge.providers.base import Message, TextDelta, ToolCall
from bridge.providers.factory import ProviderSet
from bridge.settings import Settings
from devkit.manual_clock import ManualClock
from devkit.memory_leg import MemoryLeg
from tests.conversation.fakes import FakeLLM, FakeSTT, FakeTTS, last_user
from tests.conversation.harness import FALLBACK

INFO = CallInfo("call-1", "sip:+919876543210@plivo", "sip:agent@bridge", ("127.0.0.1", 5060))
ANSWER = "We are open from nine to one on Saturday, and closed on Sunday. Anything else?"


def settings_for(tmp_path: Path, **conv: Any) -> Settings:
    base: dict[str, Any] = {
        "greeting": "Hello.",
        "transcripts_dir": str(tmp_path / "transcripts"),
        "system_prompt_file": "config/agent-prompt.txt",
        # FakeSTT's interim is the first word only: a preemptive reply would always be
        # restarted, and these tests count LLM calls and clauses. Tests of it turn it on.
        "preemptive_generation": False,
    }
    base.update(conv)
    return Settings.model_validate({"conversation": base})


def answers(default: str = ANSWER) -> Callable[[Any], list[str | ToolCall] | None]:
    def rule(messages: Any) -> list[str | ToolCall] | None:
        return [default] if last_user(messages) else None

    return rule


class Call:
    def __init__(self, tmp_path: Path, providers: ProviderSet, leg: MemoryLeg | None = None, **conv: Any):
        self.settings = settings_for(tmp_path, **conv)
        self.leg = leg or MemoryLeg("call-1", ManualClock())
        self.providers = providers
        self.writer = TranscriptWriter.for_call(self.settings, INFO)
        self.task: asyncio.Task[str] | None = None

    async def __aenter__(self) -> Call:
        self.task = asyncio.create_task(
            run_conversation(
                self.leg, self.providers, self.settings, transcript=self.writer, call_info=INFO,
                fallback_audio=FALLBACK, clock=self.leg.clock, vad=create_vad(self.settings.conversation.vad),
            )
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None and not self.task.done():
            await self.leg.remote_hangup("bye")
            await asyncio.wait_for(self.task, 5)
        self.writer.close()

    async def result(self) -> str:
        assert self.task is not None
        return await asyncio.wait_for(self.task, 5)

    def lines(self) -> list[dict[str, Any]]:
        assert self.writer.path is not None
        return [json.loads(line) for line in self.writer.path.read_text().splitlines()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["event"] == name]

    async def until(self, cond: Callable[[], bool], max_s: float = 10.0) -> None:
        """Step the leg until ``cond`` holds (real I/O such as HTTP gets a moment per step)."""
        for _ in range(int(max_s / 0.02)):
            if cond():
                return
            await self.leg.run_for(0.02)
            await asyncio.sleep(0.0005)
        raise AssertionError("condition not reached")


def _utterances(leg: MemoryLeg) -> list[str]:
    seen: list[str] = []
    for frame in leg.sent:
        if frame.utterance_id not in seen:
            seen.append(frame.utterance_id)
    return seen


async def test_question_in_answer_out(tmp_path: Path, speech: dict[str, bytes]) -> None:
    llm = FakeLLM(answers())
    tts = FakeTTS()
    providers = ProviderSet([FakeSTT(["when are you open on saturday"])], [llm], [tts])
    turns_before = REGISTRY.get_sample_value("voice_bridge_turn_latency_seconds_count",
                                             {"mark": "first_audio_out"}) or 0
    async with Call(tmp_path, providers) as call:
        leg = call.leg
        await leg.run_for(1.0)
        assert len(leg.agent_audio()) // 16 == len("Hello.") * 60  # the greeting, in full
        leg.say(speech["open"])
        await leg.run_for(len(speech["open"]) / 16000 + 1.0)
        assert llm.calls[-1][-1] == Message("user", "when are you open on saturday")
        assert llm.calls[-1][0].role == "system" and "telephone call" in llm.calls[-1][0].content
        await leg.run_for(6.0)
        reply = _utterances(leg)[-1]
        # the first clause is cut after first_clause_words (4) words: speech starts sooner
        assert tts.clauses[1:] == ["We are open from", "nine to one on Saturday,", "and closed on Sunday.",
                                   "Anything else?"]
        assert leg.heard_ms(reply) == sum(len(c) for c in tts.clauses[1:]) * 60  # heard in full
    assert await call.result() == "bye"
    lines = call.lines()
    assert lines[0]["event"] == "call" and "9876543210" not in lines[0]["from_uri"]
    assert [e["text"] for e in call.events("user")] == ["when are you open on saturday"]
    agent = [e for e in call.events("agent") if e["purpose"] == "answer"]
    assert agent and agent[0]["text"] == ANSWER and agent[0]["interrupted"] is False
    latency = call.events("latency")
    assert len(latency) == 1
    marks = latency[0]
    assert 0 < marks["stt_final"] <= marks["llm_first_token"] <= marks["first_audio_out"]
    assert marks["voice_to_voice"] == marks["first_audio_out"]
    assert 0 <= marks["bridge_overhead"] <= 20  # one packet time at most, with instant providers
    turns_after = REGISTRY.get_sample_value("voice_bridge_turn_latency_seconds_count",
                                            {"mark": "first_audio_out"})
    assert turns_after == turns_before + 1
    assert lines[-1]["event"] == "call_end" and lines[-1]["reason"] == "bye"


async def test_barge_in_clears_the_leg_and_keeps_the_heard_part(
    tmp_path: Path, speech: dict[str, bytes]
) -> None:
    llm = FakeLLM(answers())
    providers = ProviderSet([FakeSTT(["when are you open", "wait what about sunday"])], [llm], [FakeTTS()])
    before = BARGE_INS._value.get()
    # a leg reporting its position every frame: the engine's cut is then exactly what was sent
    # (the RTP leg reports every 5 frames; the cut is then up to 100 ms short, never long)
    leg = MemoryLeg("call-1", ManualClock(), progress_every=1)
    async with Call(tmp_path, providers, leg, barge_in={"min_speech_ms": 200}) as call:
        await leg.run_for(1.0)
        leg.say(speech["open"])
        await call.until(lambda: len(_utterances(leg)) >= 2)
        reply = _utterances(leg)[-1]
        await leg.run_for(1.5)
        leg.say(speech["wait"])
        await call.until(lambda: len(llm.calls) >= 2)
        await leg.run_for(0.5)
    cut = [e for e in call.events("agent") if e.get("interrupted")]
    assert cut, call.lines()
    heard_ms = cut[0]["heard_ms"]
    assert 1500 <= heard_ms < 3000
    # nothing of the reply left the leg after the frame that confirmed the barge-in
    assert leg.heard_ms(reply) == heard_ms
    assert BARGE_INS._value.get() == before + 1
    history = llm.calls[-1]
    assert history[-1] == Message("user", "wait what about sunday")
    heard = history[-2]
    assert heard.role == "assistant" and ANSWER.startswith(heard.content) and heard.content != ANSWER
    assert heard.content == cut[0]["text"]


async def test_echo_of_the_agent_does_not_cut_it_off(tmp_path: Path, speech: dict[str, bytes]) -> None:
    leg = MemoryLeg("call-1", ManualClock(), echo_gain=0.25, echo_delay_frames=4)
    llm = FakeLLM(answers())
    providers = ProviderSet([FakeSTT(["when are you open"])], [llm], [FakeTTS(voice=speech["voice"])])
    async with Call(tmp_path, providers, leg=leg, barge_in={"min_speech_ms": 200}) as call:
        await leg.run_for(1.0)
        leg.say(speech["open"])
        await call.until(lambda: len(_utterances(leg)) >= 2)
        await leg.run_for(6.0)
    answer = [e for e in call.events("agent") if e["purpose"] == "answer"]
    assert answer and answer[0]["interrupted"] is False
    assert len(llm.calls) == 1


async def test_llm_raising_mid_stream_plays_fallback_and_fails_over(
    tmp_path: Path, speech: dict[str, bytes]
) -> None:
    broken = FakeLLM(answers(), name="broken", fail_after_words=3)
    spare = FakeLLM(answers("Sorry about that. We open at nine."), name="spare")
    providers = ProviderSet([FakeSTT(["when are you open"])], [broken, spare], [FakeTTS()])
    async with Call(tmp_path, providers) as call:
        leg = call.leg
        await leg.run_for(1.0)
        leg.say(speech["open"])
        await call.until(lambda: len(spare.calls) >= 1)
        await leg.run_for(4.0)
    utts = _utterances(leg)
    fallback = [u for u in utts if u.startswith("fb")]
    assert fallback and leg.agent_audio(fallback[0]) == FALLBACK
    assert utts.index(fallback[0]) < len(utts) - 1  # the spare's answer follows it
    failures = call.events("provider_failure")
    assert failures[0]["kind"] == "llm" and failures[0]["provider"] == "broken"
    assert [e for e in call.events("agent") if e["text"] == "Sorry about that. We open at nine."]


async def test_end_call_tool_hangs_up_after_goodbye(tmp_path: Path, speech: dict[str, bytes]) -> None:
    def rule(messages: Any) -> list[str | ToolCall] | None:
        if last_user(messages):
            return ["Goodbye!", ToolCall("e1", "end_call", {})]
        return None

    providers = ProviderSet([FakeSTT(["thanks bye"])], [FakeLLM(rule)], [FakeTTS()])
    async with Call(tmp_path, providers) as call:
        leg = call.leg
        await leg.run_for(1.0)
        leg.say(speech["open"])
        await call.until(lambda: leg.ended)
        assert await call.result() == "agent-ended"
    assert leg.hangup_reason == "agent-ended"
    assert leg.heard_ms(_utterances(leg)[-1]) == len("Goodbye!") * 60  # heard in full first


async def test_dtmf_in_and_send_dtmf_and_transfer_tools(tmp_path: Path) -> None:
    def rule(messages: Any) -> list[str | ToolCall] | None:
        said = last_user(messages)
        if said == "DTMF: 2":
            return ["Pressing one.", ToolCall("d1", "send_dtmf", {"digits": "1"})]
        if said == "DTMF: 0":
            return ["Transferring.", ToolCall("t1", "transfer_call", {})]
        if messages[-1].role == "tool" and messages[-1].tool_call_id == "d1":
            return ["Done."]
        return None

    providers = ProviderSet([FakeSTT([])], [FakeLLM(rule)], [FakeTTS()])
    async with Call(tmp_path, providers, transfer_target="sip:desk@example.com", dtmf_collect_ms=200) as call:
        leg = call.leg
        await leg.run_for(1.0)
        leg.press("2")
        await call.until(lambda: bool(leg.dtmf_sent))
        await leg.run_for(2.0)
        assert leg.dtmf_sent == ["1"]
        assert [e["text"] for e in call.events("agent")][-1] == "Pressing one. Done."
        leg.press("0")
        await call.until(lambda: bool(leg.transfers))
        assert leg.transfers == ["sip:desk@example.com"]
        assert await call.result() == "transferred"
    assert [e["digits"] for e in call.events("dtmf")] == ["2", "0"]


async def test_http_tool_result_goes_back_to_the_model(tmp_path: Path, speech: dict[str, bytes]) -> None:
    seen: list[Any] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"slots": ["10:00", "15:00"]})

    app = web.Application()
    app.router.add_post("/slots", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def rule(messages: Any) -> list[str | ToolCall] | None:
        if last_user(messages):
            return [ToolCall("h1", "free_slots", {"day": "monday"})]
        if messages[-1].role == "tool":
            return [f"I have {messages[-1].content}."]
        return None

    llm = FakeLLM(rule)
    tool = {"name": "free_slots", "url": f"http://127.0.0.1:{port}/slots", "timeout_s": 2,
            "parameters": {"type": "object", "properties": {"day": {"type": "string"}}}}
    providers = ProviderSet([FakeSTT(["any slots on monday"])], [llm], [FakeTTS()])
    try:
        async with Call(tmp_path, providers, http_tools=[tool]) as call:
            leg = call.leg
            await leg.run_for(1.0)
            leg.say(speech["open"])
            await call.until(lambda: len(llm.calls) >= 2)
            await leg.run_for(0.5)
    finally:
        await runner.cleanup()
    assert seen == [{"day": "monday"}]
    assert llm.calls[-1][-1].content == '{"slots":["10:00","15:00"]}'
    assert "free_slots" in [e["name"] for e in call.events("tool_call")]


@pytest.mark.parametrize("gone", ["stt-fails", "leg-ends"])
async def test_stt_failure_and_caller_hangup(tmp_path: Path, speech: dict[str, bytes], gone: str) -> None:
    stt = FakeSTT(["hello"])
    providers = ProviderSet([stt], [FakeLLM(answers())], [FakeTTS()])
    async with Call(tmp_path, providers) as call:
        leg = call.leg
        await leg.run_for(1.0)
        if gone == "leg-ends":
            await leg.remote_hangup("bye")
            assert await call.result() == "bye"
            return
        stt.fail_on_send = True
        leg.say(speech["open"])
        await call.until(lambda: leg.ended)
    assert await call.result() == "provider-failure"
    assert any(u.startswith("fb") for u in _utterances(leg))


class _GatedLLM:
    """Its first token comes only once ``gate`` is set (the bytes "arrive")."""

    name = "gated-llm"

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def stream(self, messages: Any, tools: Any) -> AsyncIterator[TextDelta]:
        await self.gate.wait()
        yield TextDelta("Hello, how can I help?")


async def test_a_stalled_loop_does_not_fail_a_provider_whose_bytes_came_meanwhile(tmp_path: Path) -> None:
    """The loop got round to the call 3 s late (past the 2.5 s first-token deadline) while the
    LLM's first token was already in: the token counts, no provider failure, no fallback."""
    llm = _GatedLLM()
    providers = ProviderSet([FakeSTT([])], [llm], [FakeTTS()])
    async with Call(tmp_path, providers, greeting="") as call:  # the LLM's own opening
        leg = call.leg
        await leg.run_for(0.5)
        assert isinstance(leg.clock, ManualClock)
        leg.clock.advance(3.0)  # nothing of ours ran for 3 s: the ticker wakes first ...
        llm.gate.set()  # ... and the token that came in meanwhile is read next
        await call.until(lambda: len(_utterances(leg)) >= 1)
        await leg.run_for(0.2)
    assert not call.events("provider_failure"), call.events("provider_failure")
    assert not call.events("fallback")


async def test_a_slow_provider_on_a_punctual_loop_still_fails(tmp_path: Path) -> None:
    llm = _GatedLLM()
    providers = ProviderSet([FakeSTT([])], [llm], [FakeTTS()])
    async with Call(tmp_path, providers, greeting="") as call:
        await call.until(lambda: bool(call.events("provider_failure")), max_s=5.0)
    failure = call.events("provider_failure")[0]
    assert failure["kind"] == "llm" and failure["reason"] == "first-token-timeout"


class _CountingClock(ManualClock):
    """A ManualClock that counts the driver's sleeps (each one a wake-up of its ticker)."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps = 0

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        await super().sleep(seconds)


async def test_the_timers_wake_at_the_engines_deadlines_not_on_a_period(tmp_path: Path) -> None:
    """Listening in silence, the next timer is the reprompt 8 s away: the driver sleeps until
    it (a 100 ms period would have woken 60 times), and the reprompt still comes on time."""
    clock = _CountingClock()
    providers = ProviderSet([FakeSTT([])], [FakeLLM(answers())], [FakeTTS()])
    async with Call(tmp_path, providers, leg=MemoryLeg("call-1", clock), reprompt_after_s=8.0) as call:
        leg = call.leg
        await call.until(lambda: bool(call.events("agent")))  # the greeting, heard in full
        listening_since, sleeps = clock.now(), clock.sleeps
        await leg.run_for(6.0)
        assert clock.sleeps - sleeps <= 3
        assert len(leg.first_queued) == 1
        await call.until(lambda: len(leg.first_queued) == 2, max_s=3.0)  # the reprompt
        assert clock.now() - listening_since <= 8.0 + 0.06


async def test_the_timers_run_when_the_leg_delivers_no_frames(tmp_path: Path) -> None:
    """On hold the leg delivers nothing: the reprompt still comes, from the timer alone."""
    providers = ProviderSet([FakeSTT([])], [FakeLLM(answers())], [FakeTTS()])
    async with Call(tmp_path, providers, reprompt_after_s=2.0) as call:
        leg = call.leg
        await call.until(lambda: bool(call.events("agent")))
        assert isinstance(leg.clock, ManualClock)
        for _ in range(150):  # 3 s of clock time, no frame delivered
            leg.clock.advance(0.02)
            for _ in range(10):
                await asyncio.sleep(0)
        assert len(leg.first_queued) == 2


class _LateClock(ManualClock):
    """Every sleep of the driver ends 80 ms after it was due: a loop that stays late."""

    async def sleep(self, seconds: float) -> None:
        await super().sleep(max(0.0, seconds) + 0.08)


async def test_the_timers_still_run_on_a_loop_that_is_late_on_every_pass(tmp_path: Path) -> None:
    """Each wake-up is more than _LATE_S late: the tick may be put off by one pass, never by
    every pass, so the reprompt still comes (it never did when every late wake-up deferred)."""
    clock = _LateClock()
    providers = ProviderSet([FakeSTT([])], [FakeLLM(answers())], [FakeTTS()])
    async with Call(tmp_path, providers, leg=MemoryLeg("call-1", clock), reprompt_after_s=2.0) as call:
        leg = call.leg
        await call.until(lambda: bool(call.events("agent")))
        for _ in range(200):  # 4 s of clock time, no frame delivered
            clock.advance(0.02)
            for _ in range(10):
                await asyncio.sleep(0)
        assert len(leg.first_queued) == 2
