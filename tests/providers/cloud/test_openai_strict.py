"""OpenAI as unkind as the service: the fake refuses what the API refuses (HTTP 400), streams
parallel tool calls, empty-choices chunks, reasoning_content and in-stream errors; the real
openai SDK client must cope with each. Also defect 1 of issue 15 end to end: the history the
engine keeps after a barge-in during a running tool must be one the API accepts."""

from __future__ import annotations

import asyncio

import openai
import pytest

from bridge.conversation import actions as act
from bridge.providers.base import Message, ProviderError, TextDelta, ToolCall, backstop_s
from bridge.settings import Settings
from devkit.fakes import FakeCloud
from devkit.fakes.openai import ParallelTools, ToolReply
from devkit.fakes.server import OPENAI_KEY
from tests.conversation.harness import Harness

from .conftest import assert_clean
from .test_openai import HISTORY, make, run


async def test_unanswered_tool_call_is_refused_like_the_api(cloud: FakeCloud) -> None:
    history = [
        *HISTORY,
        Message("assistant", "", tool_calls=(ToolCall("call_9", "send_dtmf", {"digits": "1"}),)),
        Message("user", "actually never mind"),
    ]
    with pytest.raises(ProviderError) as info:
        await run(make(cloud.http_url), history)
    assert not info.value.retryable and "400" in str(info.value)
    assert_clean(info.value)
    refused = cloud.openai.journal.of("rejected")[0].data
    assert refused["status"] == 400 and "call_9" in refused["message"]


async def test_tool_message_without_a_call_and_bad_role_are_refused(cloud: FakeCloud) -> None:
    orphan = [*HISTORY, Message("tool", "done", tool_call_id="call_x")]
    bad_role = [*HISTORY, Message("robot", "beep")]  # type: ignore[arg-type]
    for history in (orphan, bad_role):
        with pytest.raises(ProviderError) as info:
            await run(make(cloud.http_url), history)
        assert "400" in str(info.value) and not info.value.retryable
    assert cloud.openai.journal.count("rejected") == 2


async def test_barge_in_during_a_running_tool_leaves_a_history_the_api_accepts(cloud: FakeCloud) -> None:
    """Defect 1: the caller interrupts while send_dtmf runs; every later request used to get
    HTTP 400 because the tool call was never answered."""
    h = Harness(barge_in={"min_speech_ms": 100})
    h.greet()
    h.say_turn("press one for me")
    rid = h.reply_id
    h.llm("Pressing one now.", ToolCall("call_d1", "send_dtmf", {"digits": "1"}))
    assert h.last(act.RunTool).reply_id == rid
    h.tts(rid, 1500, done=False)
    h.play(rid, 600, finish=False)
    h.frames(6, True)  # the caller talks over the reply while the tool is still running
    assert h.of(act.CancelReply)
    h.engine.on_tool_result(h.t, rid, "call_d1", "sent 1")  # too late: the reply is gone
    h.frames(15, False)
    h.transcript("actually never mind")
    messages = list(h.last(act.StartLlm).messages)
    tool_replies = [m for m in messages if m.role == "tool"]
    assert [m.tool_call_id for m in tool_replies] == ["call_d1"]
    assert tool_replies[0].content.startswith("cancelled")
    cloud.openai.script.append("No problem.")
    events = await run(make(cloud.http_url), messages)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "No problem."


async def test_parallel_tool_calls_arrive_whole_and_in_order(cloud: FakeCloud) -> None:
    cloud.openai.script.append(
        ParallelTools(
            (ToolReply("lookup", {"id": 7, "kind": "order"}), ToolReply("send_dtmf", {"digits": "123"})),
            text_before="One moment.",
        )
    )
    events = await run(make(cloud.http_url))
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert calls == [
        ToolCall("call_fake1", "lookup", {"id": 7, "kind": "order"}),
        ToolCall("call_fake2", "send_dtmf", {"digits": "123"}),
    ]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "One moment."


async def test_in_stream_error_event_is_a_provider_error(cloud: FakeCloud) -> None:
    cloud.openai.script.append("one two three four")
    cloud.openai.stream_error_after = 4
    got: list[object] = []
    with pytest.raises(ProviderError) as info:
        async with asyncio.timeout(5):
            async for e in make(cloud.http_url).stream(HISTORY, []):
                got.append(e)
    assert got == [TextDelta("one"), TextDelta(" two")]
    assert info.value.retryable
    assert_clean(info.value)


async def test_empty_choices_chunks_are_skipped(cloud: FakeCloud) -> None:
    cloud.openai.script.append("Fine.")
    events = await run(make(cloud.http_url))
    assert events == [TextDelta("Fine.")]  # the filter and usage chunks have no choices at all


async def test_o_series_gets_max_completion_tokens_and_no_temperature(cloud: FakeCloud) -> None:
    cloud.openai.script.append("Thought about it.")
    events = await run(make(cloud.http_url, model="o3-mini", max_tokens=120))
    assert events and cloud.openai.journal.count("rejected") == 0
    body = cloud.openai.journal.of("request")[0].data["body"]
    assert body["max_completion_tokens"] == 120
    assert "max_tokens" not in body and "temperature" not in body


async def test_the_fake_refuses_what_o_series_models_refuse(cloud: FakeCloud) -> None:
    """What the client avoids above, the fake refuses, as the API does (so that test can fail)."""
    sdk = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=f"{cloud.http_url}/v1", max_retries=0)
    wire = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.chat.completions.create(model="o1", messages=wire, stream=True, max_tokens=10)  # type: ignore[arg-type]
    assert "max_completion_tokens" in str(info.value)
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.chat.completions.create(model="o3-mini", messages=wire, stream=True, temperature=0.6)  # type: ignore[arg-type]
    assert "temperature" in str(info.value)
    await sdk.close()


async def test_reasoning_model_needs_its_own_first_token_timeout(cloud: FakeCloud) -> None:
    """reasoning_content streams for 0.6 s before the answer and is not yielded (the engine's
    first-token deadline, which fails a thinker on the default, keeps running); the per-model
    setting is what the engine's timer and the client's backstop both read."""
    cloud.openai.reasoning_s["deepseek-reasoner"] = 0.6
    cloud.openai.script.append("Here it is.")
    settings = Settings.model_validate(
        {"llm": {"model": "deepseek-reasoner", "first_token_timeout_by_model": {"deepseek-reasoner": 5.0}}}
    )
    assert settings.llm.first_token_timeout_s == 5.0  # the engine's timer reads the same value
    events = await run(make(cloud.http_url, model="deepseek-reasoner", read_timeout_s=backstop_s(5.0)))
    assert all(isinstance(e, TextDelta) for e in events)  # the reasoning is not an answer
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Here it is."


async def test_insufficient_quota_429_is_not_retryable(cloud: FakeCloud) -> None:
    """A 429 is retryable when it is a rate limit, not when the account is out of credit."""
    cloud.openai.quota_exhausted = True
    with pytest.raises(ProviderError) as info:
        await run(make(cloud.http_url))
    assert not info.value.retryable and "quota" in str(info.value)
    assert_clean(info.value)
