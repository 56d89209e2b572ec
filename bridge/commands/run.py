"""`voice-bridge run`: the daemon."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bridge import event_loop
from bridge.event_loop import LOOP_NAMES
from bridge.logs import setup_logging
from bridge.settings import SettingsError
from bridge.settings.addresses import parse_host_port
from bridge.settings.secrets import MissingSecretError

HELP = "run the daemon (SIP user agent, RTP, agents, /healthz and /metrics)"


def _host_port(value: str) -> tuple[str, int]:
    try:
        return parse_host_port(value, "0.0.0.0")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port_range(value: str) -> tuple[int, int]:
    lo, sep, hi = value.partition("-")
    if not sep or not lo.isdigit() or not hi.isdigit():
        raise argparse.ArgumentTypeError(f"expected LO-HI, got {value!r}")
    return int(lo), int(hi)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sip-listen", type=_host_port, metavar="HOST:PORT", help="SIP (UDP and TCP)")
    parser.add_argument("--rtp-ports", type=_port_range, metavar="LO-HI", help="RTP port range")
    parser.add_argument("--http-listen", type=_host_port, metavar="HOST:PORT", help="/healthz and /metrics")
    parser.add_argument("--agent", help="echo | prompt | conversation")
    parser.add_argument("--max-calls", type=int, metavar="N")
    parser.add_argument("--event-loop", choices=LOOP_NAMES, help="uvloop | asyncio (daemon.event_loop)")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.sip_listen:
        out.setdefault("sip", {}).update(listen_host=args.sip_listen[0], listen_port=args.sip_listen[1])
    if args.rtp_ports:
        out["media"] = {"rtp_port_min": args.rtp_ports[0], "rtp_port_max": args.rtp_ports[1]}
    if args.http_listen:
        out["http"] = {"listen_host": args.http_listen[0], "listen_port": args.http_listen[1]}
    if args.agent:
        out.setdefault("daemon", {})["agent"] = args.agent
    if args.max_calls is not None:
        out.setdefault("sip", {})["max_calls"] = args.max_calls
    if args.event_loop:
        out.setdefault("daemon", {})["event_loop"] = args.event_loop
    return out


def run(args: argparse.Namespace) -> int:
    from bridge.daemon.preflight import load_checked

    try:
        # The same checks as `voice-bridge check`: any problem and the daemon does not start.
        settings, secrets = load_checked(args.config, overrides=overrides_from_args(args))
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(settings.logging.level, settings.logging.format, settings.logging.log_phone_numbers)
    from bridge.daemon.main import StartupError, serve

    try:
        return event_loop.run(serve(settings, secrets), settings.daemon.event_loop)
    except StartupError as exc:  # a port taken, an address not on this machine
        print(f"voice-bridge: {exc}", file=sys.stderr)
        return 2
    except (MissingSecretError, ValueError) as exc:  # what preflight cannot see (should not happen)
        print(f"voice-bridge: {exc}", file=sys.stderr)
        return 2
