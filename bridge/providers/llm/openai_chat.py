"""OpenAI chat completions, streamed, with tools (openai 3.x ``AsyncOpenAI``).

``base_url`` reaches any OpenAI-compatible server (vLLM, Ollama, Groq). Retries and
timeouts are explicit (the SDK's defaults are 2 retries with backoff and a 600 s read
timeout): the engine, not the SDK, decides when to retry or fail over. The engine times the
first token and the stalls; the client keeps only a read-timeout backstop well past them. Text deltas are
yielded as they arrive; tool calls are assembled from their fragments and yielded whole.
Closing the iterator early (barge-in) closes the HTTP stream at once. The chunks are read as
raw SSE JSON, no SDK model object per chunk. With ``max_retries`` 0 (the default: the engine
decides) the request is the SDK's own, sent on aiohttp (openai_wire.py: a quarter of the SDK
path's CPU per reply); with retries, the SDK's client sends it (openai_sse.py), for its retry
policy. ``warmup()`` (``llm.warmup_on_call``, llm/warm.py) opens a pooled connection to the
API host with ``GET {base_url}/models`` when a call is offered, so the first request does
not pay TCP and TLS set-up; again when the caller starts speaking if the pool sat idle since
(``llm.warmup_on_speech``: the pool drops a connection idle for KEEPALIVE_S).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import openai
from openai import AsyncOpenAI

from bridge.providers import base
from bridge.providers.base import LlmEvent, Message, ProviderError, TextDelta, ToolCall, ToolSpec
from bridge.providers.llm import openai_wire
from bridge.providers.llm.openai_errors import NAME, map_error
from bridge.providers.llm.openai_sse import RawChatStream, open_chat_stream
from bridge.providers.llm.openai_wire import ChatWire, WireChatStream
from bridge.settings import Secrets, Settings

__all__ = ["NAME", "OpenAIChat", "create", "is_reasoning_model", "map_error", "to_wire", "tools_to_wire"]
# A reply that left its connection pooled this recently is taken as warm: warmup() then
# sends nothing. Below the pools' keep-alive (openai_wire.KEEPALIVE_S, httpx's 5 s).
FRESH_S = 2.0
WARM_REPLY_S = 2.0  # the warm-up's GET /models answer, after the connect timeout
# After a failed warm-up (a revoked key, the API down) none is due for this long: the caller's
# every speech onset, on every call sharing the client, would otherwise send a GET that fails
# again (and log it). The turn's own request still goes, and fails over.
RETRY_S = 30.0
# A request that finds a warm-up's GET under way on a pooled connection (one round trip) waits
# this long at most for it: the GET holds that connection, and a request sent meanwhile opens
# another, cold one (TCP + TLS: 100-300 ms to a distant endpoint, about what this bounds the
# wait to). Not for a warm-up that opens a connection itself (the offer's on a cold pool, e.g.
# before an LLM-made greeting): its set-up takes as long as the request's own would.
JOIN_WARM_S = 0.3
_O_SERIES = re.compile(r"^o\d")  # o1, o3-mini, o4-mini: OpenAI's reasoning models


def is_reasoning_model(model: str) -> bool:
    """OpenAI's o-series, which take max_completion_tokens and no temperature."""
    return bool(_O_SERIES.match(model))


def to_wire(messages: Sequence[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.role == "tool":
            item["tool_call_id"] = m.tool_call_id
        if m.tool_calls:
            item["content"] = m.content or None
            item["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in m.tool_calls
            ]
        out.append(item)
    return out


def tools_to_wire(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


class _ToolCallAssembler:
    """Tool calls arrive as fragments keyed by index: id+name first, then argument pieces
    (the chunk's ``delta.tool_calls`` objects, as the API sent them)."""

    def __init__(self) -> None:
        self._parts: dict[int, dict[str, Any]] = {}

    def add(self, fragments: Sequence[dict[str, Any]]) -> None:
        for f in fragments:
            part = self._parts.setdefault(int(f.get("index") or 0), {"id": "", "name": "", "arguments": ""})
            if f.get("id"):
                part["id"] = f["id"]
            fn = f.get("function")
            if isinstance(fn, dict):
                if fn.get("name"):
                    part["name"] = fn["name"]
                if fn.get("arguments"):
                    part["arguments"] += fn["arguments"]

    def take(self) -> list[ToolCall]:
        calls = []
        for index in sorted(self._parts):
            part = self._parts[index]
            try:
                args = json.loads(part["arguments"] or "{}")
            except json.JSONDecodeError:
                raise ProviderError(NAME, f"tool call {part['name']!r} has invalid JSON arguments") from None
            if not isinstance(args, dict) or not part["name"]:
                raise ProviderError(NAME, f"malformed tool call {part['name']!r}")
            calls.append(ToolCall(part["id"] or f"call_{index}", part["name"], args))
        self._parts.clear()
        return calls


class OpenAIChat:
    name = NAME

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str = "",
        temperature: float = 0.6,
        max_tokens: int = 300,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = base.backstop_s(2.5, 3.0),
        max_retries: int = 0,
    ) -> None:
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        # a backstop only: the engine's first-token and stall deadlines come first
        timeout = openai.Timeout(read_timeout_s, connect=connect_timeout_s)
        self._client = AsyncOpenAI(
            api_key=api_key, base_url=base_url or None, max_retries=max_retries, timeout=timeout
        )
        # no retries: the SDK's request on aiohttp; retries: the SDK sends, for its policy
        self._wire = None if max_retries else ChatWire(
            self._client, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s
        )
        self._warm_timeout_s = connect_timeout_s + WARM_REPLY_S
        self._idle_since: float | None = None  # when the last reply left its connection idle
        self._busy = 0  # replies and warm-ups under way (the pool is not idle)
        self._failed_at: float | None = None  # when the last warm-up failed
        self._warming: asyncio.Future[None] | None = None  # set when the warm-up under way ends

    def warmup_due(self) -> bool:
        """Whether a warm-up would help: nothing under way on this client's pool, no
        reply or warm-up left a connection idle in the last FRESH_S (a GET then would hold
        that connection, and a request asked for meanwhile would open a cold one), and no
        warm-up failed in the last RETRY_S. Cheap:
        the caller's speech onset asks it (llm/warm.py warm_on_speech)."""
        if self._busy:
            return False
        now = time.monotonic()
        if self._failed_at is not None and now - self._failed_at < RETRY_S:
            return False
        return self._idle_since is None or now - self._idle_since >= FRESH_S

    async def warmup(self) -> None:
        """Open (or refresh) a pooled connection to the API host before a request:
        ``GET {base_url}/models`` on the client that sends the chat requests. Sends nothing
        unless ``warmup_due()`` (e.g. a second warm-up while one is under way). A chat
        request that starts while its GET holds the pooled connection waits for it
        (JOIN_WARM_S at most) and reuses that connection."""
        if not self.warmup_due():
            return
        idle = self._idle_since
        pooled = idle is not None and time.monotonic() - idle < openai_wire.KEEPALIVE_S
        warming = asyncio.get_running_loop().create_future() if pooled else None
        self._warming = warming
        self._busy += 1
        try:
            await self._warm()
        except Exception:  # (a cancelled one is no sign of a failing provider)
            self._failed_at = time.monotonic()
            raise
        finally:
            self._busy -= 1
            self._warming = None
            if warming is not None:
                warming.set_result(None)
        self._failed_at = None
        self._idle_since = time.monotonic()

    async def _warm(self) -> None:
        try:
            async with asyncio.timeout(self._warm_timeout_s):
                if self._wire is not None:
                    await self._wire.warm()
                else:  # the SDK sends (max_retries > 0): its pool, one attempt
                    try:
                        await self._client.with_options(max_retries=0).models.list()
                    except openai.OpenAIError as exc:
                        raise map_error(exc) from None
        except TimeoutError:
            raise ProviderError(NAME, "warm-up failed (timeout)") from None

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncGenerator[LlmEvent, None]:
        # The messages and tools go as ``extra_body`` (merged over the request's JSON as given,
        # the SDK's documented way to add properties): as ``messages=`` the SDK would walk every
        # message through its TypedDict transform first, which leaves our wire dicts unchanged
        # and cost ~2 ms a request with 3 messages, ~20 ms with 40 (a capped history's worth).
        body: dict[str, Any] = {"messages": to_wire(messages)}
        kwargs: dict[str, Any] = {"model": self.model, "messages": [], "stream": True, "extra_body": body}
        if is_reasoning_model(self.model):
            # o-series: max_tokens is refused (HTTP 400) and so is any temperature but 1
            kwargs["max_completion_tokens"] = self.max_tokens
        else:
            kwargs["temperature"] = self.temperature
            kwargs["max_tokens"] = self.max_tokens
        if tools:
            body["tools"] = tools_to_wire(tools)
        stream: RawChatStream | WireChatStream | None = None
        self._idle_since = None  # until this reply is read to its end
        self._busy += 1
        try:
            warming = self._warming
            if warming is not None:  # the GET holds the pooled connection: reuse it after
                await asyncio.wait((warming,), timeout=JOIN_WARM_S)
            if self._wire is not None:
                stream = await self._wire.open(wire_body(kwargs))
            else:
                try:
                    stream = await open_chat_stream(self._client, kwargs)
                except openai.OpenAIError as exc:
                    raise map_error(exc) from None
            calls = _ToolCallAssembler()
            while True:
                try:
                    chunk = await anext(stream)
                except StopAsyncIteration:
                    break
                except openai.OpenAIError as exc:
                    raise map_error(exc) from None
                choices = chunk.get("choices")
                choice = choices[0] if choices else None
                delta = choice.get("delta") if choice is not None else None
                content = delta.get("content") if delta else None
                fragments = delta.get("tool_calls") if delta else None
                # reasoning_content (DeepSeek, vLLM reasoning parsers) is not an answer and is
                # not yielded: the engine's first-token deadline still runs; a slow thinker
                # needs its own timeout (llm.first_token_timeout_by_model)
                if content or fragments:
                    if fragments:
                        calls.add(fragments)
                    if content:
                        yield TextDelta(content)
                if choice is not None and choice.get("finish_reason") in ("tool_calls", "function_call"):
                    for call in calls.take():
                        yield call
            self._idle_since = time.monotonic()  # read to its end: the connection is pooled
            for call in calls.take():  # servers that end without finish_reason "tool_calls"
                yield call
        finally:
            self._busy -= 1
            if stream is not None:
                # barge-in or failure: close the HTTP response now, not when GC finds it
                await stream.close()

    async def aclose(self) -> None:
        if self._wire is not None:
            await self._wire.aclose()
        await self._client.close()


def wire_body(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The JSON body the SDK sends for these ``create()`` arguments: the top-level parameters
    (none needs the SDK's transform: plain strings, numbers, booleans) with ``extra_body``
    merged over them; ``messages=[]`` is the placeholder extra_body replaces."""
    params = {k: v for k, v in kwargs.items() if k != "extra_body"}
    return {**params, **kwargs.get("extra_body", {})}


def create(settings: Settings, secrets: Secrets) -> OpenAIChat:
    s = settings.llm
    return OpenAIChat(
        api_key=secrets.require("openai_api_key"),
        model=s.model,
        base_url=s.base_url,
        temperature=s.temperature,
        max_tokens=s.max_tokens,
        connect_timeout_s=s.connect_timeout_s,
        read_timeout_s=base.backstop_s(s.first_token_timeout_s, s.stall_timeout_s),
        max_retries=s.max_retries,
    )
