"""Fake OpenAI(-compatible) chat completions: POST /v1/chat/completions with stream=true.

Replies come from `script` (a queue): a string is streamed as text deltas, word by word; a
`ToolReply` as one tool call whose arguments arrive in fragments, like the real API; a
`ParallelTools` as several calls (index 0..n, fragments interleaved). As unkind as the
service: requests the API would refuse get its HTTP 400 (openai_rules), a `choices: []`
chunk comes first (Azure's prompt-filter chunk; OpenAI's usage chunk has the same shape),
models in `reasoning_s` stream `reasoning_content` (DeepSeek, vLLM reasoning parsers) for
that long before the first content token, and `stream_error_after` sends an in-stream
``data: {"error": ...}`` event, which the SDK raises as APIError.

GET /v1/models lists the models as the API reference documents it (a ``list`` object whose
``data`` holds ``model`` objects: id, object, created, owned_by; 401 ``invalid_api_key`` with a
bad key). Every request is journaled with the client's TCP port (``peer``), so a test can
tell a reused connection from a new one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from devkit.fakes.control import FaultedStream, Faults, Journal
from devkit.fakes.openai_rules import check_request

REASONING_CHUNK_S = 0.05


@dataclass(frozen=True)
class ToolReply:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    text_before: str = ""


@dataclass(frozen=True)
class ParallelTools:
    calls: tuple[ToolReply, ...]
    text_before: str = ""


Reply = str | ToolReply | ParallelTools


class FakeOpenAI:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.faults = Faults()
        self.journal = Journal()
        self.script: deque[Reply] = deque()
        # model -> seconds of reasoning_content streamed before the first content token
        self.reasoning_s: dict[str, float] = {}
        # after this many chunks, an in-stream error event ends the stream (once per request)
        self.stream_error_after: int | None = None
        self.quota_exhausted = False  # 429 insufficient_quota: out of credit, not a rate limit
        self.models_status: int | None = None  # GET /v1/models answers this error status once
        self.models = ["gpt-4o", "gpt-4o-mini"]

    async def list_models(self, request: web.Request) -> web.Response:
        """GET /v1/models (platform.openai.com/docs/api-reference/models/list)."""
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.journal.add("rejected", status=401, peer=_peer(request))
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if self.models_status is not None:
            status, self.models_status = self.models_status, None
            self.journal.add("rejected", status=status, peer=_peer(request))
            return _error(status, "injected fault", "server_error", "server_error")
        self.journal.add("models", peer=_peer(request))
        created = 1686935002
        data = [{"id": m, "object": "model", "created": created, "owned_by": "system"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.journal.add("rejected", status=401)
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if self.quota_exhausted:
            self.journal.add("rejected", status=429)
            return _error(
                429, "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota", "insufficient_quota",
            )
        status = self.faults.take_status()
        if status:
            self.journal.add("rejected", status=status)
            kind = "rate_limit_exceeded" if status == 429 else "server_error"
            return _error(status, "injected fault", kind, kind)
        body = await request.json()
        self.journal.add("request", body=body, peer=_peer(request))
        if not body.get("stream"):
            return _error(400, "this fake only streams", "invalid_request_error", "unsupported")
        refusal = check_request(body)
        if refusal is not None:
            self.journal.add("rejected", status=400, message=refusal.message)
            return _error(400, refusal.message, "invalid_request_error", refusal.code, refusal.param)
        reply = self.script.popleft() if self.script else "Okay."
        stream = FaultedStream(self.faults, self.journal, request.transport)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        model = str(body.get("model", "fake"))
        chunks = _chunks(reply, model, self.reasoning_s.get(model, 0.0))
        try:
            async for chunk, delay in stream.chunks(chunks):
                n = stream.sent
                if n == self.stream_error_after:
                    self.journal.add("stream_error", sent=n)
                    error = {"message": "The server had an error while processing your request.",
                             "type": "server_error", "param": None, "code": None}
                    await resp.write(b"data: " + json.dumps({"error": error}).encode() + b"\n\n")
                    await resp.write_eof()
                    return resp
                if n == 0:
                    delay = self.faults.first_byte_delay_s
                elif delay < 0:
                    delay = self.faults.chunk_delay_s
                await asyncio.sleep(delay)
                if _is_first_token(chunk, chunks[:n]):
                    self.journal.add("first_token")
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if stream.dropped:
                return resp
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            # handler_cancellation: aiohttp cancels the handler when the client disconnects
            self.journal.add("aborted")
            raise
        self.journal.add("completed")
        return resp


def _peer(request: web.Request) -> int:
    """The client's TCP port: the same port on two requests means a reused connection."""
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    return int(peer[1]) if peer else 0


def _error(
    status: int, message: str, kind: str, code: str | None, param: str | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}, status=status
    )


def _has_token(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices") or []
    delta = choices[0]["delta"] if choices else {}
    return bool(delta.get("content") or delta.get("tool_calls"))


def _is_first_token(chunk: dict[str, Any], before: list[tuple[dict[str, Any], float]]) -> bool:
    return _has_token(chunk) and not any(_has_token(c) for c, _ in before)


def _chunks(reply: Reply, model: str, reasoning_s: float) -> list[tuple[dict[str, Any], float]]:
    """(chunk, delay before it) pairs; a negative delay stands for the fault's chunk delay."""
    base = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    out: list[dict[str, Any]] = [
        {**base, "choices": [], "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]},
        chunk({"role": "assistant", "content": ""}),
    ]
    steps = round(reasoning_s / REASONING_CHUNK_S)
    thinking = [chunk({"reasoning_content": "Let me think. "}) for _ in range(steps)]
    text = reply if isinstance(reply, str) else reply.text_before
    words = text.split(" ") if text else []
    out += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
    if isinstance(reply, str):
        out.append(chunk({}, "stop"))
    else:
        calls = (reply,) if isinstance(reply, ToolReply) else reply.calls
        out += [chunk({"tool_calls": [f]}) for f in _tool_fragments(calls)]
        out.append(chunk({}, "tool_calls"))
    # the usage chunk OpenAI sends with stream_options.include_usage: no choices at all
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    out.append({**base, "choices": [], "usage": usage})
    pairs = [(c, 0.0) for c in out[:2]] + [(c, REASONING_CHUNK_S) for c in thinking]
    return pairs + [(c, -1.0) for c in out[2:]]


def _tool_fragments(calls: tuple[ToolReply, ...]) -> list[dict[str, Any]]:
    """Per call (index 0..n): an opening fragment (index, id, type, name, empty arguments),
    then only index and argument pieces, as the API streams (parallel) tool calls."""
    out: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        out.append(
            {
                "index": index,
                "id": f"call_fake{index + 1}",
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
        )
        args = json.dumps(call.arguments)
        step = max(1, len(args) // 3)
        out += [
            {"index": index, "function": {"arguments": args[i : i + step]}}
            for i in range(0, len(args), step)
        ]
    return out
