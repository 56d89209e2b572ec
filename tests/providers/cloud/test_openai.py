"""OpenAI chat completions: the real openai SDK against the fake SSE server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import pytest

from bridge.providers.base import LlmEvent, Message, ProviderError, TextDelta, ToolCall, ToolSpec
from bridge.providers.llm.openai_chat import OpenAIChat
from devkit.fakes import FakeCloud
from devkit.fakes.openai import ToolReply
from devkit.fakes.server import OPENAI_KEY

from .conftest import assert_clean

HISTORY = [Message("system", "You are terse."), Message("user", "Hi there")]
END_CALL = ToolSpec(
    "end_call", "Say goodbye and hang up", {"type": "object", "properties": {"reason": {"type": "string"}}}
)


def make(url: str, **kw: object) -> OpenAIChat:
    opts: dict[str, object] = {
        "api_key": OPENAI_KEY,
        "model": "gpt-4o",
        "base_url": f"{url}/v1",
        "read_timeout_s": 2.0,
    }
    opts.update(kw)
    return OpenAIChat(**opts)  # type: ignore[arg-type]


async def run(
    llm: OpenAIChat, messages: list[Message] = HISTORY, tools: list[ToolSpec] | None = None
) -> list[LlmEvent]:
    async with asyncio.timeout(10):
        return [e async for e in llm.stream(messages, tools or [])]


async def test_text_streams_as_deltas(cloud: FakeCloud) -> None:
    cloud.openai.script.append("Hello, how can I help you today?")
    events = await run(make(cloud.http_url))
    assert len(events) == 7 and all(isinstance(e, TextDelta) for e in events)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello, how can I help you today?"
    body = cloud.openai.journal.of("request")[0].data["body"]
    assert body["stream"] is True and body["model"] == "gpt-4o"
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi there"},
    ]
    assert "tools" not in body
    await cloud.openai.journal.wait_for(lambda j: j.count("completed") == 1)


async def test_first_delta_arrives_before_the_reply_ends(cloud: FakeCloud) -> None:
    cloud.openai.script.append("one two three four five")
    cloud.openai.faults.chunk_delay_s = 0.05
    llm = make(cloud.http_url)
    async with contextlib.aclosing(llm.stream(HISTORY, [])) as stream:
        first = await anext(stream)
        assert first == TextDelta("one")
        assert cloud.openai.journal.count("completed") == 0  # still streaming on the server
        rest = [e async for e in stream]
    assert len(rest) == 4


async def test_tool_call_is_assembled_from_fragments(cloud: FakeCloud) -> None:
    cloud.openai.script.append(ToolReply("end_call", {"reason": "caller said bye"}, text_before="Goodbye!"))
    events = await run(make(cloud.http_url), tools=[END_CALL])
    assert events == [
        TextDelta("Goodbye!"),
        ToolCall("call_fake1", "end_call", {"reason": "caller said bye"}),
    ]
    body = cloud.openai.journal.of("request")[0].data["body"]
    assert body["tools"][0]["function"]["name"] == "end_call"
    assert body["tools"][0]["function"]["parameters"]["properties"]["reason"] == {"type": "string"}


async def test_tool_results_are_sent_back_in_wire_format(cloud: FakeCloud) -> None:
    call = ToolCall("call_1", "lookup", {"id": 7})
    history = [
        *HISTORY,
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", '{"ok": true}', "call_1"),
    ]
    await run(make(cloud.http_url), history)
    sent = cloud.openai.journal.of("request")[0].data["body"]["messages"]
    assert sent[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"id": 7}'}}
        ],
    }
    assert sent[3] == {"role": "tool", "content": '{"ok": true}', "tool_call_id": "call_1"}


async def test_cancel_mid_stream_closes_the_connection(cloud: FakeCloud) -> None:
    """Barge-in: the consumer stops reading; the server must see the client go away."""
    cloud.openai.script.append(" ".join(["word"] * 50))
    cloud.openai.faults.chunk_delay_s = 0.02
    async with contextlib.aclosing(make(cloud.http_url).stream(HISTORY, [])) as stream:
        await anext(stream)
    await cloud.openai.journal.wait_for(lambda j: j.count("aborted") == 1)
    assert cloud.openai.journal.count("completed") == 0


async def test_bad_key(cloud: FakeCloud, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    llm = make(cloud.http_url, api_key="sk-wrong-key-should-not-leak")
    with pytest.raises(ProviderError) as info:
        await run(llm)
    assert not info.value.retryable and "401" in str(info.value) and "OPENAI_API_KEY" in str(info.value)
    assert_clean(info.value)
    assert "sk-wrong-key-should-not-leak" not in caplog.text


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_rate_limit_and_server_errors_are_retryable(cloud: FakeCloud, status: int) -> None:
    cloud.openai.faults.status = status
    with pytest.raises(ProviderError) as info:
        await run(make(cloud.http_url))
    assert info.value.retryable and str(status) in str(info.value)
    assert cloud.openai.journal.count("rejected") == 1  # max_retries=0: the engine decides, not the SDK
    assert_clean(info.value)


async def test_explicit_sdk_retries_when_configured(cloud: FakeCloud) -> None:
    cloud.openai.faults.status = 503
    cloud.openai.faults.status_times = 1
    events = await run(make(cloud.http_url, max_retries=1))
    assert events and cloud.openai.journal.count("rejected") == 1


async def test_connection_refused(refused_url: str) -> None:
    with pytest.raises(ProviderError) as info:
        await run(make(refused_url))
    assert info.value.retryable and "connection" in str(info.value)
    assert_clean(info.value)


async def test_the_client_does_not_time_the_first_token_itself(cloud: FakeCloud) -> None:
    """First token and stalls are the engine's deadlines (one failure label): a response
    slower than llm.first_token_timeout_s still comes through the client."""
    cloud.openai.script.append("Late but fine.")
    cloud.openai.faults.first_byte_delay_s = 0.6
    events = await run(make(cloud.http_url, read_timeout_s=5.0))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Late but fine."


async def test_no_response_ends_at_the_read_backstop(cloud: FakeCloud) -> None:
    cloud.openai.faults.first_byte_delay_s = 5.0
    with pytest.raises(ProviderError) as info:
        await run(make(cloud.http_url, read_timeout_s=0.3))
    assert info.value.retryable and "timed out" in str(info.value)
    # the fake sees the closed connection when its delayed first write fails (after 5 s)
    await cloud.openai.journal.wait_for(lambda j: j.count("aborted") == 1, limit_s=15.0)


async def test_stall_mid_stream_ends_at_the_read_backstop(cloud: FakeCloud) -> None:
    cloud.openai.script.append("one two three four five six")
    cloud.openai.faults.stall_after = 4  # the filter chunk, the role chunk, two tokens
    llm = make(cloud.http_url, read_timeout_s=0.3)
    got: list[LlmEvent] = []
    with pytest.raises(ProviderError) as info:
        async with asyncio.timeout(5):
            async for e in llm.stream(HISTORY, []):
                got.append(e)
    assert got == [TextDelta("one"), TextDelta(" two")]
    assert info.value.retryable and "timed out" in str(info.value)
    await cloud.openai.journal.wait_for(lambda j: j.count("aborted") == 1)


async def test_dropped_connection_mid_stream(cloud: FakeCloud) -> None:
    cloud.openai.script.append("one two three four five six")
    cloud.openai.faults.drop_after = 3
    with pytest.raises(ProviderError) as info:
        await run(make(cloud.http_url))
    assert info.value.retryable
    assert_clean(info.value)


async def test_the_request_body_is_the_one_the_sdk_builds_from_the_same_params(cloud: FakeCloud) -> None:
    """Messages and tools go as extra_body (no per-message SDK transform): the JSON on the wire
    is the same as the SDK's own transform of ``messages=``/``tools=`` gives."""
    from openai._utils import async_maybe_transform
    from openai.types.chat import completion_create_params

    from bridge.providers.llm.openai_chat import to_wire, tools_to_wire

    call = ToolCall("call_1", "lookup", {"id": 7})
    history = [*HISTORY, Message("assistant", "Looking.", tool_calls=(call,)),
               Message("tool", '{"ok": true}', "call_1"), Message("user", "and?")]
    await run(make(cloud.http_url), history, tools=[END_CALL])
    body = cloud.openai.journal.of("request")[0].data["body"]
    params = {"model": "gpt-4o", "messages": to_wire(history), "stream": True, "temperature": 0.6,
              "max_tokens": 300, "tools": tools_to_wire([END_CALL])}
    expected = await async_maybe_transform(params, completion_create_params.CompletionCreateParamsStreaming)
    assert body == json.loads(json.dumps(expected))
