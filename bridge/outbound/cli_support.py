"""Shared plumbing for the outbound CLI commands: settings, logging, exit codes."""

from __future__ import annotations

import argparse
import sys

from bridge.logs import setup_logging
from bridge.settings import Settings, SettingsError, load_settings

EXIT_OK = 0
EXIT_FAILED = 1  # the call/campaign ran and failed
EXIT_USAGE = 2  # configuration or input error, nothing was attempted
EXIT_REFUSED = 3  # compliance refused the call (reasons printed)


def nested_config_option(parser: argparse.ArgumentParser) -> None:
    """Accept --config after a sub-subcommand too (SUPPRESS keeps the parent's value otherwise)."""
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML settings")


def settings_for(args: argparse.Namespace, settings: Settings | None) -> Settings | None:
    """The given settings, or those from --config; prints the error and returns None when invalid."""
    if settings is None:
        try:
            settings = load_settings(getattr(args, "config", None))
        except SettingsError as exc:
            print(exc, file=sys.stderr)
            return None
    setup_logging(settings.logging.level, settings.logging.format, settings.logging.log_phone_numbers)
    return settings


def default_caller_id(settings: Settings) -> str:
    if settings.plivo.caller_id:
        return settings.plivo.caller_id
    registered = settings.compliance.registered_caller_ids
    return registered[0] if registered else ""
