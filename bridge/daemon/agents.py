"""Which agent runs on a call: `echo`, `prompt`, the configured conversation agent, or a named
profile ([agents.NAME]) chosen by the call's route."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bridge.callmodel import CallInfo
from bridge.leg import AudioLeg
from bridge.settings import Secrets, Settings
from bridge.settings.agents import BUILTIN_AGENTS
from bridge.supervisor import AgentRunner

if TYPE_CHECKING:
    from bridge.providers.factory import ProviderSet

log = logging.getLogger(__name__)

__all__ = ["BUILTIN_AGENTS", "AgentRunner", "build_agent", "prepare_conversation"]


async def build_agent(settings: Settings, secrets: Secrets) -> AgentRunner:
    """One runner for every call: it runs the agent the call names (the route's agent, carried
    as the Agent call fact: X-PH-Agent on SIP, extra_headers on the stream), else daemon.agent.

    Every agent that can be named is built at start-up (providers, fallback line, decoders),
    so a call never pays for SDK imports or synthesis, and a missing key fails the start.
    """
    from bridge.daemon.profiles import profile_settings

    default = settings.daemon.agent
    names = dict.fromkeys([default, *settings.agents, "echo"])
    runners = {name: await _build_one(profile_settings(settings, name), secrets, name) for name in names}
    return _CallAgents(runners, default)


class _CallAgents:
    """The runner the supervisor calls; ``offered`` is its hook for a call not yet answered."""

    def __init__(self, runners: dict[str, AgentRunner], default: str) -> None:
        self._runners = runners
        self._default = default

    def _named(self, info: CallInfo) -> tuple[str, AgentRunner | None]:
        wanted = info.plivo_headers.get("Agent", "")
        return wanted, self._runners.get(wanted or self._default)

    def offered(self, info: CallInfo) -> None:
        _, runner = self._named(info)
        offered = getattr(runner or self._runners[self._default], "offered", None)
        if offered is not None:
            offered(info)

    async def __call__(self, leg: AudioLeg, info: CallInfo) -> None:
        wanted, runner = self._named(info)
        if runner is None:
            log.warning("the call names agent %r, which this daemon does not have: running %r",
                        wanted, self._default, extra={"call_id": info.call_id})
            runner = self._runners[self._default]
        await runner(leg, info)


async def _build_one(settings: Settings, secrets: Secrets, name: str) -> AgentRunner:
    if name == "echo":
        from bridge.agents.echo import run_echo

        async def echo(leg: AudioLeg, info: CallInfo) -> None:
            await run_echo(leg)

        return echo
    if name == "prompt":
        from bridge.agents.prompt import run_prompt

        prompt_file = settings.daemon.prompt_file
        if not prompt_file:
            raise ValueError("daemon.prompt_file: the prompt agent needs an audio file")

        async def prompt(leg: AudioLeg, info: CallInfo) -> None:
            await run_prompt(leg, prompt_file, listen_s=settings.daemon.prompt_listen_s)

        return prompt
    if name == "conversation" or name in settings.agents:
        return await _conversation_agent(settings, secrets)
    known = ", ".join([*BUILTIN_AGENTS, *settings.agents])
    raise ValueError(f"daemon.agent: unknown agent {name!r} (one of {known})")


async def prepare_conversation(settings: Settings, secrets: Secrets) -> tuple[ProviderSet, bytes]:
    """Build the providers, warm them up and synthesise the fallback line, before any call.

    Warm-up matters for the offline STT: a pocketsphinx decoder takes 0.4 s of CPU to load
    (3-4 s measured on a busy 2-core box). Loaded on the first call instead, it was still
    loading when the caller finished the first question, the engine's STT-final timeout
    fired with nothing heard, and the turn was dropped (the flaky offline e2e test).
    """
    from bridge.conversation.fallback import presynthesize
    from bridge.providers.factory import build_providers

    providers = build_providers(settings, secrets)
    for stt in providers.stt:
        prewarm = getattr(stt, "prewarm", None)  # optional: only engines with a load cost have it
        if prewarm is not None:
            await prewarm()
    fallback_audio = await presynthesize(providers.tts, settings.conversation.fallback_text)
    return providers, fallback_audio


async def _conversation_agent(settings: Settings, secrets: Secrets) -> AgentRunner:
    providers, fallback_audio = await prepare_conversation(settings, secrets)
    return _Conversation(settings, providers, fallback_audio)


class _Conversation:
    """The conversation agent of one profile."""

    def __init__(self, settings: Settings, providers: ProviderSet, fallback_audio: bytes) -> None:
        self._settings = settings
        self._providers = providers
        self._fallback_audio = fallback_audio

    def offered(self, info: CallInfo) -> None:
        """Warm the TTS and the LLM while the call is being answered, so the greeting's and
        the first turn's requests find their connections open (bench/tts_warmup.py
        --answer-ms); a failure is only logged."""
        from bridge.providers.llm import warm as llm_warm
        from bridge.providers.tts import warm as tts_warm

        tts_warm.warm_on_call(self._providers.tts, self._settings.tts.warmup_on_call)
        llm_warm.warm_on_call(self._providers.llm, self._settings.llm.warmup_on_call)

    async def __call__(self, leg: AudioLeg, info: CallInfo) -> None:
        from bridge.conversation import run_conversation
        from bridge.conversation.transcript import TranscriptWriter

        # The caller's frames feed the VAD and STT, no one listens: an RTP leg then hands them
        # on as they come, without its playout depth (RtpLeg.listen_on_arrival).
        listen = getattr(leg, "listen_on_arrival", None)
        if listen is not None:
            listen()
        transcript = TranscriptWriter.for_call(self._settings, info)
        try:
            reason = await run_conversation(
                leg,
                self._providers,
                self._settings,
                transcript=transcript,
                call_info=info,
                fallback_audio=self._fallback_audio,
            )
            log.info("conversation ended", extra={"call_id": info.call_id, "reason": reason})
        finally:
            transcript.close()
