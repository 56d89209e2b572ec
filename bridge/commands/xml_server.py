"""`voice-bridge xml-server`: the Plivo XML server on Werkzeug, for development.

Production runs the same app under gunicorn (systemd/voice-bridge-xml.service).
"""

from __future__ import annotations

import argparse
import sys

from bridge.settings import Secrets, SettingsError, load_settings
from bridge.settings.addresses import parse_host_port

HELP = "serve Plivo's answer/hangup/status/fallback webhooks (development server; gunicorn in production)"


def _host_port(value: str) -> tuple[str, int]:
    try:
        return parse_host_port(value, "127.0.0.1")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", type=_host_port, default=("127.0.0.1", 5000), metavar="HOST:PORT",
                        help="address to serve on (default 127.0.0.1:5000; port 0 = any free port)")


def run(args: argparse.Namespace) -> int:
    from werkzeug.serving import make_server

    from bridge.logs import setup_logging
    from xml_server.app import ConfigError, create_app

    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(settings.logging.level, settings.logging.format, settings.logging.log_phone_numbers)
    secrets = Secrets.from_env()
    try:
        app = create_app(settings, secrets.optional("plivo_auth_token"), secrets.optional("stream_secret"),
                         secrets.optional("sip_inbound_password"))
    except ConfigError as exc:
        print(f"voice-bridge xml-server: {exc}", file=sys.stderr)
        return 2
    host, port = args.listen
    server = make_server(host, port, app, threaded=True)
    # Machine-readable line for tests and scripts that start us on port 0.
    print(f"READY xml_port={server.server_port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
