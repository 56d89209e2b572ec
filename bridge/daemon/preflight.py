"""Everything `run` would fail on, found before it starts: the one validation path that
`voice-bridge check` and `voice-bridge run` share (DESIGN.md, "Settings and start-up").

The schema (bridge.settings) checks each value on its own; this checks what needs the
machine: files, directories, voices, keys in the environment, addresses. Each problem is a
``(key, reason)`` pair and all of them are reported at once, so one `check` finds them all.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bridge.daemon.agents import BUILTIN_AGENTS
from bridge.settings import Secrets, Settings, SettingsError, default_config_path, load_settings
from bridge.settings.addresses import parse_host_port
from bridge.settings.paths import resolve_path
from bridge.settings.secrets import ENV_NAMES, MissingSecretError

Problem = tuple[str, str]

# The setting a provider's start-up error is about (its own message says what is wrong).
_PROVIDER_SETTING = {
    "scripted": "llm.script_file",
    "espeak": "tts.espeak_voice",
    "pocketsphinx": "stt.pocketsphinx_corpus",
}


def agent_names(settings: Settings) -> tuple[str, ...]:
    """Every agent a call can be given: the built-in ones and the configured profiles."""
    return (*BUILTIN_AGENTS, *settings.agents)


def agents_in_use(settings: Settings) -> list[str]:
    """The agents `run` builds at start: daemon.agent, every profile, and the built-in agents
    routes name (unknown names are reported by themselves)."""
    named = [settings.daemon.agent, *settings.agents, *(r.agent for r in settings.plivo.routes if r.agent)]
    return [n for n in dict.fromkeys(named) if n in agent_names(settings)]


def preflight(settings: Settings, secrets: Secrets) -> list[Problem]:
    """All problems found, in a stable order (each once); empty when `run` can start."""
    problems: list[Problem] = []
    misnamed = _agent_names(settings)
    problems += misnamed
    used = agents_in_use(settings)
    if misnamed and "conversation" not in used:
        used.append("conversation")  # most likely meant: check its files and keys too
    if "prompt" in used:
        problems += _prompt_file(settings)
    for agent in used:
        if agent not in ("echo", "prompt"):
            problems += _conversation(settings, secrets, agent)
    problems += _writable("daemon.data_dir", settings.daemon.data_dir)
    if settings.media.recordings_dir:
        problems += _writable("media.recordings_dir", settings.media.recordings_dir)
    problems += _secrets(settings, secrets)
    problems += _numbers(settings)
    problems += _listen_hosts(settings)
    return list(dict.fromkeys(problems))


def _agent_names(settings: Settings) -> list[Problem]:
    known = agent_names(settings)
    out = []
    for key, name in [("daemon.agent", settings.daemon.agent)] + [
        (f"plivo.routes.{i}.agent", r.agent) for i, r in enumerate(settings.plivo.routes) if r.agent
    ]:
        if name not in known:
            hint = _did_you_mean(name, known)
            out.append((key, f"unknown agent {name!r}{hint} (one of {', '.join(known)})"))
    return out


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _prompt_file(settings: Settings) -> list[Problem]:
    from bridge.audio.wavfile import WavError, read_wav_8k_mono

    path = settings.daemon.prompt_file
    if not path:
        return [("daemon.prompt_file", "the prompt agent needs an audio file")]
    try:
        read_wav_8k_mono(path)  # the loader the prompt agent uses
    except (WavError, OSError) as exc:
        return [("daemon.prompt_file", str(exc))]
    return []


# A problem with a setting a profile overrides is reported under the profile's key.
_PROFILE_KEYS = {
    "conversation.system_prompt_file": "system_prompt_file",
    "llm.script_file": "script_file",
    "tts.espeak_voice": "voice",
    "stt.providers": "stt",
    "llm.providers": "llm",
    "tts.providers": "tts",
}


def _conversation(settings: Settings, secrets: Secrets, agent: str) -> list[Problem]:
    from bridge.daemon.profiles import profile_settings

    conf = profile_settings(settings, agent)
    out: list[Problem] = []
    prompt = conf.conversation.system_prompt_file
    if prompt and not resolve_path(prompt).is_file():
        out.append(("conversation.system_prompt_file", f"no such file: {prompt}"))
    out += _writable("conversation.transcripts_dir", conf.conversation.transcripts_dir)
    out += _providers(conf, secrets)
    profile = settings.agents.get(agent)
    if profile is None:
        return out
    overridden = profile.model_dump(exclude_none=True)
    renamed = []
    for key, reason in out:
        field = _PROFILE_KEYS.get(key)
        if field in overridden:
            renamed.append((f"agents.{agent}.{field}", reason))
        else:
            renamed.append((key, reason))
    return renamed


def _providers(settings: Settings, secrets: Secrets) -> list[Problem]:
    """Create each selected provider as `run` will: a missing key, script, corpus or voice
    shows here. Every provider is tried, so every missing key is named, not the first."""
    from bridge.providers.factory import LLM_MODULES, STT_MODULES, TTS_MODULES

    out: list[Problem] = []
    selected = (
        ("stt", STT_MODULES, settings.stt.providers),
        ("llm", LLM_MODULES, settings.llm.providers),
        ("tts", TTS_MODULES, settings.tts.providers),
    )
    for kind, modules, names in selected:
        for name in names:
            if name not in modules:
                choices = ", ".join(modules)
                out.append((f"{kind}.providers", f"{name!r} is not implemented (one of {choices})"))
                continue
            try:
                provider = importlib.import_module(modules[name]).create(settings, secrets)
            except MissingSecretError as exc:
                out.append((f"{kind}.providers", f"{name} needs {exc.env_var} in the environment"))
                continue
            except Exception as exc:  # the provider's own start-up check: a clear message
                text = str(exc).removeprefix(f"{name}: ")
                out.append((_PROVIDER_SETTING.get(name, f"{kind}.providers"), text))
                continue
            del provider  # built only to be checked; `run` builds its own
    return out


def _writable(key: str, directory: str) -> list[Problem]:
    """The directory, or the nearest existing folder above it (it is created at start), must
    be a directory this user can write to. Empty: the feature is off, nothing to check."""
    if not directory:
        return []
    path = Path(directory).absolute()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return [(key, f"{probe} is not a directory")]
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == path else f"cannot be created ({probe} is not writable)"
        return [(key, f"{directory} {what} by this user")]
    return []


def _secrets(settings: Settings, secrets: Secrets) -> list[Problem]:
    needed: list[tuple[str, str, bool]] = [
        ("sip.registration.enabled", "sip_password", settings.sip.registration.enabled),
        ("sip.trust.inbound_user", "sip_inbound_password", bool(settings.sip.trust.inbound_user)),
        ("outbound.trunk.user", "trunk_password", bool(settings.outbound.trunk.user)),
        ("plivo.stream_require_token", "stream_secret",
         bool(settings.daemon.stream_listen) and settings.plivo.stream_require_token),
    ]  # fmt: skip
    out = [
        (key, f"needs {ENV_NAMES[field]} in the environment")
        for key, field, wanted in needed
        if wanted and secrets.optional(field) is None
    ]
    if settings.sip.registration.enabled and not settings.sip.registration.user:
        out.append(("sip.registration.user", "registration is enabled but no user is set"))
    return out


def _numbers(settings: Settings) -> list[Problem]:
    import phonenumbers

    from bridge.outbound.numbers import InvalidNumber, normalise

    comp = settings.compliance
    region = comp.default_region.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        return [("compliance.default_region",
                 f"unknown region {comp.default_region!r} (an ISO 3166 code such as IN or US)")]
    numbers = [(f"compliance.registered_caller_ids.{i}", n) for i, n in enumerate(comp.registered_caller_ids)]
    if settings.plivo.caller_id:
        numbers.append(("plivo.caller_id", settings.plivo.caller_id))
    out = []
    for key, number in numbers:
        try:
            normalise(number, region)
        except InvalidNumber as exc:
            out.append((key, f"{number!r}: {exc}"))
    return out


def _listen_hosts(settings: Settings) -> list[Problem]:
    hosts = [("sip.listen_host", settings.sip.listen_host), ("http.listen_host", settings.http.listen_host)]
    if settings.daemon.stream_listen:
        hosts.append(("daemon.stream_listen", parse_host_port(settings.daemon.stream_listen, "0.0.0.0")[0]))
    out = []
    for key, host in hosts:
        reason = bindable(host)
        if reason:
            out.append((key, reason))
    return out


def bindable(host: str) -> str:
    """'' if this machine can listen on ``host`` (checked on a spare port, so a daemon already
    running on the configured port does not count as a problem), else why not."""
    try:
        infos = socket.getaddrinfo(host or None, 0, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        return f"{host!r} is not an address or a known host name ({exc})"
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(address)
        except OSError as exc:
            return f"cannot listen on {host!r}: {exc.strerror or exc}"
    return ""


def load_checked(
    path: str | Path | None, overrides: Mapping[str, Any] | None = None
) -> tuple[Settings, Secrets]:
    """The settings `run` starts with, or SettingsError naming every problem: the schema's
    first (a file that does not load cannot be checked further), then the machine's."""
    problems: list[Problem] = []
    try:
        settings = load_settings(path, overrides=overrides)
    except SettingsError as exc:
        if exc.settings is None:
            raise
        settings, problems = exc.settings, exc.errors  # only misnamed variables: check the rest too
    secrets = Secrets.from_env()
    problems += preflight(settings, secrets)
    if problems:
        raise SettingsError(problems, str(path or default_config_path() or ""))
    return settings, secrets
