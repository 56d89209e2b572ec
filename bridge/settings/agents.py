"""[agents.NAME] settings: named agent profiles, one daemon serving several agents.

A call gets the profile its route names (plivo.routes[].agent, carried to the daemon in the
call's signed headers), else daemon.agent. A profile changes only what it sets; everything
else comes from [conversation], [stt], [llm] and [tts] (DESIGN.md, "Agents and profiles").
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from bridge.settings.base import Section

BUILTIN_AGENTS = ("echo", "prompt", "conversation")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class AgentProfile(Section):
    greeting: str | None = None
    system_prompt_file: str | None = None
    # The TTS voice: tts.espeak_voice for espeak, tts.voice_id for ElevenLabs.
    voice: str | None = None
    # Names from conversation.http_tools this agent may call (None: all of them).
    tools: list[str] | None = None
    # Providers in failover order (None: the [stt]/[llm]/[tts] lists).
    stt: list[Literal["deepgram", "pocketsphinx"]] | None = Field(None, min_length=1)
    llm: list[Literal["openai", "scripted"]] | None = Field(None, min_length=1)
    tts: list[Literal["elevenlabs", "elevenlabs-ws", "elevenlabs-multi", "espeak"]] | None = Field(
        None, min_length=1
    )
    script_file: str | None = None  # the scripted LLM's script
    model: str | None = None  # the OpenAI(-compatible) model
    transfer_target: str | None = None
