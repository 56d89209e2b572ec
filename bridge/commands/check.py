"""`voice-bridge check`: validate a configuration file; each error printed as `key: reason`."""

from __future__ import annotations

import argparse
import sys

from bridge.settings import SettingsError, load_settings

HELP = "validate the configuration and print each error as `key: reason` (exit 2 on errors)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        source = f" ({exc.source})" if exc.source else ""
        print(f"configuration invalid{source}:", file=sys.stderr)
        for key, reason in exc.errors:
            print(f"{key}: {reason}", file=sys.stderr)
        return 2
    from bridge.settings import Secrets
    from bridge.settings.plivo_checks import plivo_warnings

    for warning in plivo_warnings(settings, Secrets.from_env()):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"configuration ok: agent={settings.daemon.agent} sip={settings.sip.listen_host}:"
          f"{settings.sip.listen_port} stt={settings.stt.providers} llm={settings.llm.providers} "
          f"tts={settings.tts.providers}")
    return 0
