"""An agent profile ([agents.NAME]) applied to the settings: the Settings its calls run with.

The conversation, the tools and the providers read only Settings, so a profile is a derived
Settings object, built once per profile at start-up; nothing below the daemon knows profiles.
"""

from __future__ import annotations

from typing import Any

from bridge.settings import Settings
from bridge.settings.agents import AgentProfile


def profile_settings(settings: Settings, name: str) -> Settings:
    """The settings for calls given agent ``name`` (unchanged for the built-in agents)."""
    profile = settings.agents.get(name)
    if profile is None:
        return settings
    data = settings.model_dump()
    conv, llm, tts, stt = data["conversation"], data["llm"], data["tts"], data["stt"]
    _set(conv, "greeting", profile.greeting)
    _set(conv, "system_prompt_file", profile.system_prompt_file)
    _set(conv, "transfer_target", profile.transfer_target)
    if profile.tools is not None:
        conv["http_tools"] = [t for t in conv["http_tools"] if t["name"] in profile.tools]
    _set(stt, "providers", profile.stt)
    _set(llm, "providers", profile.llm)
    _set(tts, "providers", profile.tts)
    _set(llm, "script_file", profile.script_file)
    _set(llm, "model", profile.model)
    if profile.voice is not None:
        _voice(tts, profile)
    return Settings.model_validate(data)


def _set(section: dict[str, Any], key: str, value: object) -> None:
    if value is not None:
        section[key] = value


def _voice(tts: dict[str, Any], profile: AgentProfile) -> None:
    # One voice name per profile: it goes to the setting of each selected TTS vendor.
    if "espeak" in tts["providers"]:
        tts["espeak_voice"] = profile.voice
    if any(p.startswith("elevenlabs") for p in tts["providers"]):
        tts["voice_id"] = profile.voice
