"""Fake OpenAI(-compatible) chat completions: POST /v1/chat/completions with stream=true.

Replies come from `script` (a queue): a string is streamed as text deltas, word by word; a
`ToolReply` as one tool call whose arguments arrive in fragments, like the real API.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bridge.devtools.fakes.control import Faults, Journal


@dataclass(frozen=True)
class ToolReply:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    text_before: str = ""


Reply = str | ToolReply


class FakeOpenAI:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.faults = Faults()
        self.journal = Journal()
        self.script: deque[Reply] = deque()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.journal.add("rejected", status=401)
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        status = self.faults.take_status()
        if status:
            self.journal.add("rejected", status=status)
            kind = "rate_limit_exceeded" if status == 429 else "server_error"
            return _error(status, "injected fault", kind, kind)
        body = await request.json()
        self.journal.add("request", body=body)
        if not body.get("stream"):
            return _error(400, "this fake only streams", "invalid_request_error", "unsupported")
        reply = self.script.popleft() if self.script else "Okay."
        stall_after, drop_after = self.faults.take_stream_faults()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        chunks = list(_chunks(reply, body.get("model", "fake")))
        try:
            for n, chunk in enumerate(chunks):
                if n == drop_after:
                    self.journal.add("dropped", sent=n)
                    if request.transport is not None:
                        request.transport.abort()
                    return resp
                if n == stall_after:
                    self.journal.add("stalled", sent=n)
                    await asyncio.sleep(3600)  # held open until the client gives up
                await asyncio.sleep(self.faults.first_byte_delay_s if n == 0 else self.faults.chunk_delay_s)
                if n == 1:  # chunk 0 carries only the role; chunk 1 is the first token
                    self.journal.add("first_token")
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            # handler_cancellation: aiohttp cancels the handler when the client disconnects
            self.journal.add("aborted")
            raise
        self.journal.add("completed")
        return resp


def _error(status: int, message: str, kind: str, code: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}, status=status
    )


def _chunks(reply: Reply, model: str) -> list[dict[str, Any]]:
    base = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    out = [chunk({"role": "assistant", "content": ""})]
    text = reply if isinstance(reply, str) else reply.text_before
    words = text.split(" ") if text else []
    out += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
    if isinstance(reply, str):
        out.append(chunk({}, "stop"))
        return out
    args = json.dumps(reply.arguments)
    out.append(
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_fake1",
                        "type": "function",
                        "function": {"name": reply.name, "arguments": ""},
                    }
                ]
            }
        )
    )
    step = max(1, len(args) // 3)
    out += [
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + step]}}]})
        for i in range(0, len(args), step)
    ]
    out.append(chunk({}, "tool_calls"))
    return out
