"""Suite-wide test settings: no telemetry from ONNX Runtime, loopback only; which event loop
the in-process async tests run on."""

import asyncio
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from bridge import event_loop

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

TESTS = Path(__file__).resolve().parent
# The in-process SIP and media tests run on both loops the daemon can run on (daemon.event_loop).
BOTH_LOOPS = ("sip", "media")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--event-loop", choices=(*event_loop.LOOP_NAMES, "both"), default="asyncio",
        help="event loop of the in-process async tests (tests/sip and tests/media: always both)",
    )


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    choice = config.getoption("--event-loop")
    try:
        area = item.path.resolve().relative_to(TESTS).parts[0]
    except ValueError:
        area = ""
    names = event_loop.LOOP_NAMES if choice == "both" or area in BOTH_LOOPS else (choice,)
    return {name: event_loop.loop_factory(name)[0] for name in names}
