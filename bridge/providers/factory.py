"""Build the configured providers. Each name maps to a module with
``create(settings: Settings, secrets: Secrets) -> STT | LLM | TTS``; modules (and their
vendor SDKs) are imported only when selected, since the SDKs cost 0.3-1 s each to import.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from bridge.providers.base import LLM, STT, TTS
from bridge.settings import Secrets, Settings

STT_MODULES = {
    "pocketsphinx": "bridge.providers.stt.pocketsphinx_stt",
    "deepgram": "bridge.providers.stt.deepgram_stt",
    "deepgram-flux": "bridge.providers.stt.flux_stt",
}
LLM_MODULES = {
    "scripted": "bridge.providers.llm.scripted",
    "openai": "bridge.providers.llm.openai_chat",
}
TTS_MODULES = {
    "espeak": "bridge.providers.tts.espeak_tts",
    "elevenlabs": "bridge.providers.tts.elevenlabs_http",
    "elevenlabs-ws": "bridge.providers.tts.elevenlabs_ws",
    "elevenlabs-multi": "bridge.providers.tts.elevenlabs_multi",
}


@dataclass(frozen=True)
class ProviderSet:
    """Providers in failover order (the first is preferred)."""

    stt: list[STT]
    llm: list[LLM]
    tts: list[TTS]


def _create(modules: dict[str, str], name: str, settings: Settings, secrets: Secrets) -> Any:
    if name not in modules:  # the schema lists only these; a direct caller may not
        raise ValueError(f"provider {name!r} is not available; choose from {sorted(modules)}")
    module = importlib.import_module(modules[name])
    return module.create(settings, secrets)


def build_providers(settings: Settings, secrets: Secrets) -> ProviderSet:
    """Raises MissingSecretError (naming the variable) when a selected provider has no key."""
    return ProviderSet(
        stt=[_create(STT_MODULES, n, settings, secrets) for n in settings.stt.providers],
        llm=[_create(LLM_MODULES, n, settings, secrets) for n in settings.llm.providers],
        tts=[_create(TTS_MODULES, n, settings, secrets) for n in settings.tts.providers],
    )
