"""`voice-bridge forget NUMBER`: erase a person's stored outbound data (DPDPA)."""

from __future__ import annotations

import argparse
import sys

from bridge.outbound.cli_support import EXIT_OK, EXIT_USAGE, settings_for
from bridge.outbound.erasure import forget
from bridge.outbound.numbers import InvalidNumber, normalise
from bridge.outbound.wiring import open_outbound
from bridge.privacy import mask_number
from bridge.settings import Settings

HELP = ("erase a person's stored data: transcripts and recordings (inbound and outbound), consent, "
        "campaign rows, audit rows; reports counts per kind")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("number")
    parser.add_argument("--include-optout", action="store_true",
                        help="also erase an opt-out (by default kept, so the person is never called again)")


def run(args: argparse.Namespace, settings: Settings | None = None) -> int:
    settings = settings_for(args, settings)
    if settings is None:
        return EXIT_USAGE
    try:
        e164 = normalise(args.number, settings.compliance.default_region)
    except InvalidNumber as exc:
        print(f"invalid number: {exc}", file=sys.stderr)
        return EXIT_USAGE
    outbound = open_outbound(settings, dialers={})
    try:
        report = forget(outbound, e164, include_optout=args.include_optout)
    finally:
        outbound.close()
    print(f"{mask_number(e164)}: erased {report.describe()}"
          f"{' optout=1' if report.optout_removed else ''}")
    if report.optout_kept:
        print("kept: the opt-out entry (so this person is never called); --include-optout erases it")
    return EXIT_OK
