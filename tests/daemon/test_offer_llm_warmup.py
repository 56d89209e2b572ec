"""llm.warmup_on_call starts when the call is offered, next to the TTS warm-up (off: nothing
is sent); a warm-up that hangs or fails never holds the greeting back."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bridge.daemon.agents import _Conversation
from bridge.providers.base import Message, ProviderError
from bridge.providers.factory import ProviderSet
from bridge.providers.llm import warm
from bridge.providers.llm.openai_chat import OpenAIChat
from bridge.settings import Settings
from devkit.fakes import FakeCloud
from devkit.memory_leg import MemoryLeg
from tests.conversation.fakes import FakeLLM, FakeSTT, FakeTTS
from tests.daemon.test_offer_warmup import GREETING, INFO


class WarmLLM(FakeLLM):
    """FakeLLM with a warm-up that succeeds, hangs until released, or fails."""

    def __init__(self, mode: str) -> None:
        super().__init__(lambda m: None)
        self.mode = mode
        self.warmups = 0
        self.warm_done = False
        self.release = asyncio.Event()

    async def warmup(self) -> None:
        self.warmups += 1
        if self.mode == "fail":
            raise ProviderError("fake-llm", "warm-up failed (ConnectError)")
        if self.mode == "hang":
            await self.release.wait()
        self.warm_done = True


def _agent(tmp_path: Path, llms: list[object], enabled: bool = True) -> _Conversation:
    settings = Settings.model_validate({
        "conversation": {"greeting": GREETING, "transcripts_dir": str(tmp_path / "t")},
        "llm": {"warmup_on_call": enabled},
    })
    providers = ProviderSet([FakeSTT([])], list(llms), [FakeTTS()])  # type: ignore[arg-type]
    return _Conversation(settings, providers, fallback_audio=bytes(1600))


async def _steps(done: WarmLLM) -> None:
    for _ in range(50):  # bounded: the warm-up task's first steps
        if done.warm_done:
            return
        await asyncio.sleep(0)


async def test_the_offer_warms_the_first_llm_unless_disabled(tmp_path: Path) -> None:
    assert Settings().llm.warmup_on_call  # on by default
    first, second = WarmLLM("ok"), WarmLLM("ok")
    _agent(tmp_path, [first, second]).offered(INFO)
    await _steps(first)
    assert (first.warmups, second.warmups) == (1, 0)  # the provider the first turn uses
    off = WarmLLM("ok")
    _agent(tmp_path, [off], enabled=False).offered(INFO)
    await _steps(off)
    assert off.warmups == 0


@pytest.mark.parametrize("mode", ["hang", "fail"])
async def test_a_hung_or_failed_llm_warm_up_does_not_hold_the_greeting(
    tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    llm = WarmLLM(mode)
    agent = _agent(tmp_path, [llm])
    leg = MemoryLeg("c1")
    caplog.set_level(logging.WARNING, logger="bridge.providers.llm.warm")
    agent.offered(INFO)
    task = asyncio.create_task(agent(leg, INFO))
    leg.start_realtime()
    try:
        for _ in range(500):  # bounded: the greeting's first frames within ~10 s
            if leg.sent or task.done():
                break
            await asyncio.sleep(0.02)
        assert leg.sent, "no greeting audio"
        assert llm.warmups == 1
        if mode == "hang":
            assert not llm.warm_done  # the greeting played while the warm-up was still stuck
        else:
            assert "llm warm-up failed" in caplog.text
    finally:
        llm.release.set()
        await leg.remote_hangup("bye")
        await asyncio.wait_for(task, 10)
        await leg.aclose()


async def test_the_offer_warms_the_real_openai_client_for_its_first_request(tmp_path: Path) -> None:
    """offered() -> llm.warm -> OpenAIChat.warmup() -> GET /v1/models on the chat session:
    the first chat request then comes from the same client port (no new connection)."""
    async with FakeCloud() as cloud:
        llm = OpenAIChat(api_key=cloud.openai.api_key, model="gpt-4o", base_url=f"{cloud.http_url}/v1")
        try:
            _agent(tmp_path, [llm]).offered(INFO)
            await asyncio.wait_for(asyncio.gather(*list(warm._running)), 10)
            cloud.openai.script.append("Hi.")
            async with asyncio.timeout(10):
                _ = [e async for e in llm.stream([Message("user", "hello")], [])]
        finally:
            await llm.aclose()
        seen = cloud.openai.journal.events
        kinds = [(e.kind, e.data.get("peer")) for e in seen if e.kind in ("models", "request")]
    assert [k for k, _ in kinds] == ["models", "request"]
    assert kinds[0][1] == kinds[1][1]
