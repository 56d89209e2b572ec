"""`voice-bridge dnd`: the NDNC/DND registry, consent and opt-outs used by the outbound scrub."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bridge.outbound.cli_support import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    default_caller_id,
    nested_config_option,
    settings_for,
)
from bridge.outbound.numbers import InvalidNumber, normalise
from bridge.outbound.registry import DndRegistry, RegistryFormatError
from bridge.outbound.store import OutboundStore
from bridge.outbound.wiring import data_dir, open_outbound
from bridge.privacy import mask_number
from bridge.settings import Settings

HELP = "manage the NDNC/DND registry (import scrub files), consent and opt-outs; check a number"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dnd_command", required=True)
    p = sub.add_parser("import", help="load a scrub file: CSV of numbers, optional allowed_categories column")
    nested_config_option(p)
    p.add_argument("file", type=Path)
    p.add_argument("--replace", action="store_true", help="full snapshot: drop entries not in it")
    p = sub.add_parser("check", help="would a call to NUMBER be allowed now? (exit 3 if not)")
    nested_config_option(p)
    p.add_argument("number")
    p.add_argument("--from", dest="from_", metavar="NUMBER", help="caller ID to check with")
    p = sub.add_parser("optout", help="record that NUMBER asked not to be called (--remove to undo)")
    nested_config_option(p)
    p.add_argument("number")
    p.add_argument("--remove", action="store_true")
    p = sub.add_parser("consent", help="record consent for transactional/service calls (--revoke to undo)")
    nested_config_option(p)
    p.add_argument("number")
    p.add_argument("--purpose", default="transactional")
    p.add_argument("--revoke", action="store_true")
    p = sub.add_parser("stats", help="how many numbers the registry holds")
    nested_config_option(p)


def _import(args: argparse.Namespace, settings: Settings) -> int:
    if not args.file.is_file():
        print(f"{args.file}: no such file", file=sys.stderr)
        return EXIT_USAGE
    registry = DndRegistry.open(data_dir(settings))
    try:
        report = registry.import_file(args.file, settings.compliance.default_region, replace=args.replace)
        total = registry.count()
    except RegistryFormatError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        registry.close()
    print(f"imported {report.imported} of {report.rows} rows; {report.invalid} invalid; "
          f"registry holds {total}")
    if report.invalid_lines:
        print(f"invalid rows at lines {', '.join(map(str, report.invalid_lines))}"
              f"{' ...' if report.invalid > len(report.invalid_lines) else ''}", file=sys.stderr)
    return EXIT_OK


def _check(args: argparse.Namespace, settings: Settings) -> int:
    from_number = args.from_ or default_caller_id(settings)
    outbound = open_outbound(settings, dialers={})
    try:
        decision = outbound.gate.check(args.number, from_number)
    finally:
        outbound.close()
    masked = mask_number(decision.to_e164) if decision.to_e164 else "(invalid number)"
    if decision.allowed:
        print(f"{masked}: allowed now")
        return EXIT_OK
    print(f"{masked}: refused")
    for r in decision.refusals:
        print(f"  {r.rule}: {r.detail}")
    return EXIT_REFUSED


def _personal(args: argparse.Namespace, settings: Settings) -> int:
    try:
        e164 = normalise(args.number, settings.compliance.default_region)
    except InvalidNumber as exc:
        print(f"invalid number: {exc}", file=sys.stderr)
        return EXIT_USAGE
    store = OutboundStore.open(data_dir(settings))
    try:
        masked = mask_number(e164)
        if args.dnd_command == "optout":
            if args.remove:
                print(f"{masked}: opt-out {'removed' if store.remove_optout(e164) else 'was not recorded'}")
            else:
                store.add_optout(e164)
                print(f"{masked}: opt-out recorded; no outbound call will be placed")
        elif args.revoke:
            print(f"{masked}: consent {'revoked' if store.revoke_consent(e164) else 'was not recorded'}")
        else:
            store.add_consent(e164, args.purpose)
            print(f"{masked}: consent recorded ({args.purpose})")
    finally:
        store.close()
    return EXIT_OK


def run(args: argparse.Namespace, settings: Settings | None = None) -> int:
    settings = settings_for(args, settings)
    if settings is None:
        return EXIT_USAGE
    if args.dnd_command == "import":
        return _import(args, settings)
    if args.dnd_command == "check":
        return _check(args, settings)
    if args.dnd_command == "stats":
        registry = DndRegistry.open(data_dir(settings))
        try:
            print(f"registry holds {registry.count()} numbers ({registry.path})")
        finally:
            registry.close()
        return EXIT_OK
    return _personal(args, settings)
