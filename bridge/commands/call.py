"""`voice-bridge call`: place one outbound call after every compliance check."""

from __future__ import annotations

import argparse
import json
import sys

from bridge import event_loop
from bridge.outbound.cli_support import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    default_caller_id,
    settings_for,
)
from bridge.outbound.service import CallAttempt
from bridge.outbound.wiring import open_outbound
from bridge.privacy import mask_number
from bridge.settings import Settings

HELP = "place one outbound call (DND scrub, calling hours and caller-ID checks first; exit 3 if refused)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", required=True, metavar="NUMBER", help="destination (E.164 or national)")
    parser.add_argument("--from", dest="from_", metavar="NUMBER",
                        help="registered caller ID (default: plivo.caller_id, else the first registered)")
    parser.add_argument("--agent", default="", metavar="NAME", help="agent (passed to answer_url)")
    parser.add_argument("--via", choices=["plivo-api", "sip-trunk"], help="default: outbound.via")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _report(attempt: CallAttempt, as_json: bool) -> None:
    decision = attempt.decision
    masked = mask_number(decision.to_e164) if decision.to_e164 else "(invalid number)"
    if as_json:
        out = {
            "to": masked,
            "allowed": decision.allowed,
            "refusals": [{"rule": r.rule, "detail": r.detail} for r in decision.refusals],
            "next_allowed": decision.next_allowed.isoformat() if decision.next_allowed else None,
            "status": attempt.placement.status if attempt.placement else "refused",
            "call_id": attempt.placement.call_id if attempt.placement else "",
            "detail": attempt.placement.detail if attempt.placement else "",
        }
        print(json.dumps(out))
        return
    if not decision.allowed:
        print(f"call to {masked} refused:", file=sys.stderr)
        for r in decision.refusals:
            print(f"  {r.rule}: {r.detail}", file=sys.stderr)
        return
    assert attempt.placement is not None
    p = attempt.placement
    stream = sys.stdout if p.ok else sys.stderr
    print(f"call to {masked}: {p.status} call_id={p.call_id or '-'} {p.detail}".rstrip(), file=stream)


def run(args: argparse.Namespace, settings: Settings | None = None) -> int:
    settings = settings_for(args, settings)
    if settings is None:
        return EXIT_USAGE
    via = args.via or settings.outbound.via
    from_number = args.from_ or default_caller_id(settings)
    if not from_number:
        print("no caller ID: pass --from or set compliance.registered_caller_ids", file=sys.stderr)
        return EXIT_USAGE
    outbound = open_outbound(settings, agent=args.agent)
    try:
        if via in outbound.unavailable:
            print(outbound.unavailable[via], file=sys.stderr)
            return EXIT_USAGE
        attempt = event_loop.run(outbound.service.call(args.to, from_number, via), settings.daemon.event_loop)
    finally:
        outbound.close()
    _report(attempt, args.json)
    if not attempt.decision.allowed:
        return EXIT_REFUSED
    return EXIT_OK if attempt.placed else EXIT_FAILED
