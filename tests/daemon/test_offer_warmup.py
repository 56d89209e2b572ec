"""tts.warmup_on_call starts when the call is offered (SIP INVITE accepted, stream start), so
it overlaps the answer; a warm-up that hangs or fails never holds the greeting back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.admission import Admission
from bridge.callmodel import CallInfo
from bridge.daemon.agents import _Conversation
from bridge.leg import AudioLeg
from bridge.providers.base import ProviderError
from bridge.providers.factory import ProviderSet
from bridge.settings import Settings
from bridge.supervisor import CallSupervisor
from devkit.memory_leg import MemoryLeg
from tests.conversation.fakes import FakeLLM, FakeSTT, FakeTTS
from tests.daemon.test_supervisor_keys import _Call, _Leg

GREETING = "Hello, how can I help?"
INFO = CallInfo("c1", "sip:+14155550123@plivo", "sip:agent@bridge", ("127.0.0.1", 5060))


class WarmTTS(FakeTTS):
    """FakeTTS with a warm-up that succeeds, hangs until released, or fails."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.warmups = 0
        self.warm_done = False
        self.release = asyncio.Event()
        self.log: list[str] = []

    async def warmup(self) -> None:
        self.warmups += 1
        self.log.append("warmup")
        if self.mode == "fail":
            raise ProviderError("fake-tts", "warm-up failed (ConnectError)")
        if self.mode == "hang":
            await self.release.wait()
        self.warm_done = True

    async def synthesize(self, text: AsyncIterator[str]) -> AsyncIterator[Any]:
        self.log.append("synthesize")
        async for chunk in super().synthesize(text):
            yield chunk


def _agent(tmp_path: Path, tts: WarmTTS) -> _Conversation:
    settings = Settings.model_validate({"conversation": {
        "greeting": GREETING, "transcripts_dir": str(tmp_path / "t")}})
    providers = ProviderSet([FakeSTT([])], [FakeLLM(lambda m: None)], [tts])  # type: ignore[list-item]
    return _Conversation(settings, providers, fallback_audio=bytes(1600))


async def test_the_supervisor_starts_the_warm_up_at_the_offer_before_the_agent(tmp_path: Path) -> None:
    tts = WarmTTS("ok")
    calls = CallSupervisor(_agent(tmp_path, tts), Admission(5))
    assert calls.take()
    sup = calls.supervise(_Call(), _Leg(), INFO)  # type: ignore[arg-type]
    for _ in range(50):  # bounded: the warm-up task's first steps
        if tts.warm_done:
            break
        await asyncio.sleep(0)
    assert tts.warmups == 1 and tts.log == ["warmup"]  # the agent has not started: nothing said
    sup.peer_ended("cancel")  # e.g. the caller gave up while it rang
    await asyncio.wait_for(sup.wait(), 10)


async def test_an_agent_without_an_offer_hook_is_run_as_before() -> None:
    ran: list[str] = []

    async def agent(leg: AudioLeg, info: CallInfo) -> None:
        ran.append(info.call_id)

    calls = CallSupervisor(agent, Admission(5))
    assert calls.take()
    sup = calls.supervise(_Call(), _Leg(), INFO)  # type: ignore[arg-type]
    sup.start_agent()
    await asyncio.wait_for(sup.wait(), 10)
    assert ran == ["c1"]


@pytest.mark.parametrize("mode", ["hang", "fail"])
async def test_a_hung_or_failed_warm_up_does_not_hold_the_greeting(
    tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    tts = WarmTTS(mode)
    agent = _agent(tmp_path, tts)
    leg = MemoryLeg("c1")
    caplog.set_level(logging.WARNING, logger="bridge.providers.tts.warm")
    agent.offered(INFO)
    task = asyncio.create_task(agent(leg, INFO))
    leg.start_realtime()
    try:
        for _ in range(500):  # bounded: the greeting's first frames within ~10 s
            if leg.sent or task.done():
                break
            await asyncio.sleep(0.02)
        assert leg.sent, "no greeting audio"
        assert tts.clauses and tts.clauses[0] == GREETING
        assert tts.log[:2] == ["warmup", "synthesize"]  # warmed first, not waited for
        if mode == "hang":
            assert not tts.warm_done  # the greeting played while the warm-up was still stuck
        else:
            assert "tts warm-up failed" in caplog.text
    finally:
        tts.release.set()
        await leg.remote_hangup("bye")
        await asyncio.wait_for(task, 10)
        await leg.aclose()
