"""Run the tools that do I/O: send_dtmf on the leg, and HTTP tools declared in the settings.

The result is always a short string for the LLM; a failing tool reports its error as the
result rather than failing the call.
"""

from __future__ import annotations

import json
import logging

import aiohttp

from bridge.conversation.tools import SEND_DTMF
from bridge.leg import AudioLeg
from bridge.providers.base import ToolCall
from bridge.settings.conversation import HttpToolSettings

log = logging.getLogger(__name__)

_DTMF_CHARS = set("0123456789*#ABCDabcd")
MAX_RESULT_CHARS = 2000


async def run_tool(call: ToolCall, leg: AudioLeg, http_tools: list[HttpToolSettings]) -> str:
    if call.name == SEND_DTMF:
        return await _send_dtmf(call, leg)
    for tool in http_tools:
        if tool.name == call.name:
            return await _http_tool(tool, call)
    return f"error: no tool named {call.name!r}"


async def _send_dtmf(call: ToolCall, leg: AudioLeg) -> str:
    digits = str(call.arguments.get("digits", "")).replace(" ", "")
    if not digits or not set(digits) <= _DTMF_CHARS:
        return "error: digits must be 0-9, *, #, A-D"
    try:
        await leg.send_dtmf(digits.upper())
    except ValueError as exc:
        return f"error: {exc}"
    return f"sent {digits.upper()}"


async def _http_tool(tool: HttpToolSettings, call: ToolCall) -> str:
    timeout = aiohttp.ClientTimeout(total=tool.timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(tool.url, json=call.arguments) as resp,
        ):
            body = await resp.text()
            if resp.status >= 400:
                return f"error: HTTP {resp.status}: {body[:200]}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("tool %s failed: %s", tool.name, type(exc).__name__)
        return f"error: {type(exc).__name__}: the tool did not answer"
    try:  # compact JSON keeps the LLM's context small
        body = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        pass
    return body[:MAX_RESULT_CHARS]
