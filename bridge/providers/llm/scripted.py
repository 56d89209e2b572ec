"""Offline LLM: a scripted agent whose replies and tool calls come from a TOML file.

It streams like a real LLM: the reply word by word as ``TextDelta``s (yielding to the event
loop between words, so a barge-in can cancel it mid-reply), then the intent's ``ToolCall``.
A tool call is emitted only if the engine offers that tool in ``tools``; otherwise the reply
is still spoken and the skipped call is logged.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, Sequence

from bridge.providers.base import LlmEvent, Message, ProviderError, TextDelta, ToolCall, ToolSpec
from bridge.providers.llm.script_agent import ScriptAgent
from bridge.providers.llm.script_model import Script, ScriptError, load_script
from bridge.settings import Secrets, Settings

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"\s*\S+\s*")  # a word with its surrounding spaces: the deltas join back exactly


class ScriptedLLM:
    name = "scripted"

    def __init__(self, script: Script) -> None:
        self.agent = ScriptAgent(script)

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> AsyncGenerator[LlmEvent, None]:
        reply = self.agent.respond(messages)
        if reply is None:
            return
        log.debug("scripted agent: intent=%s state=%s", reply.intent or "-", reply.state)
        for token in _TOKEN.findall(reply.text):
            yield TextDelta(token)
            await asyncio.sleep(0)
        if reply.tool:
            if reply.tool in {t.name for t in tools}:
                yield ToolCall(f"script_{reply.turn}_{reply.intent}", reply.tool, dict(reply.tool_args))
            else:
                log.warning(
                    "scripted agent: intent %s wants tool %s, which is not offered", reply.intent, reply.tool
                )


def create(settings: Settings, secrets: Secrets) -> ScriptedLLM:
    del secrets  # no keys
    try:
        return ScriptedLLM(load_script(settings.llm.script_file))
    except ScriptError as exc:
        raise ProviderError("scripted", str(exc), retryable=False) from exc
