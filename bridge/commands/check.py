"""`voice-bridge check`: validate a configuration as `run` would; each problem printed as
`key: reason`, all at once (the same path `run` takes before it starts: daemon.preflight)."""

from __future__ import annotations

import argparse
import sys

from bridge.settings import SettingsError

HELP = "validate the configuration as `run` would; print each problem as `key: reason` (exit 2)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from bridge.daemon.preflight import load_checked

    try:
        settings, _ = load_checked(args.config)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    from bridge.settings import Secrets
    from bridge.settings.plivo_checks import plivo_warnings

    for warning in plivo_warnings(settings, Secrets.from_env()):
        print(f"warning: {warning}", file=sys.stderr)
    profiles = f" profiles={sorted(settings.agents)}" if settings.agents else ""
    print(f"configuration ok: agent={settings.daemon.agent}{profiles} sip={settings.sip.listen_host}:"
          f"{settings.sip.listen_port} stt={settings.stt.providers} llm={settings.llm.providers} "
          f"tts={settings.tts.providers}")
    return 0
