"""Which event loop a process runs on: asyncio's own by default, uvloop (libuv) on request.

The daemon's hot path is per-packet and per-frame Python on one loop; a profile at 60 stream
calls spent ~20 % of its samples in asyncio's own machinery (selector, handles, transports),
which uvloop does in C. Both loops stay selectable (`daemon.event_loop`) and tested; asyncio's
is the default because, measured end to end, uvloop did not pace RTP better or carry more
stream calls on this project's benches (README, "Capacity runs").

If uvloop cannot be imported (a platform without a wheel), the process runs on asyncio's loop
and says so once, rather than failing to start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

log = logging.getLogger(__name__)

LoopName = Literal["uvloop", "asyncio"]
LOOP_NAMES: tuple[LoopName, ...] = ("uvloop", "asyncio")
DEFAULT_LOOP: LoopName = "asyncio"

T = TypeVar("T")
_warned = False


def _asyncio_loop() -> asyncio.AbstractEventLoop:
    # Not asyncio.new_event_loop(): that asks the policy, which a library may have set to uvloop.
    return asyncio.SelectorEventLoop()


def loop_factory(name: str = DEFAULT_LOOP) -> tuple[Callable[[], asyncio.AbstractEventLoop], LoopName]:
    """A factory for ``name``'s loop and the name of the loop it really builds (asyncio when
    uvloop is asked for but missing)."""
    global _warned
    if name not in LOOP_NAMES:
        raise ValueError(f"event loop must be one of {', '.join(LOOP_NAMES)}, got {name!r}")
    if name == "uvloop":
        try:
            import uvloop
        except ImportError as exc:
            if not _warned:
                _warned = True
                log.warning("uvloop not available (%s): running on asyncio's event loop", exc)
            return _asyncio_loop, "asyncio"
        return uvloop.new_event_loop, "uvloop"
    return _asyncio_loop, "asyncio"


def run(main: Coroutine[Any, Any, T], name: str = DEFAULT_LOOP) -> T:
    """``asyncio.run(main)`` on ``name``'s loop (asyncio.Runner takes a factory from 3.11;
    asyncio.run only from 3.12)."""
    try:
        factory, _ = loop_factory(name)
    except ValueError:
        main.close()  # never started: no "coroutine was never awaited" warning on top
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """What ``loop`` (default: the running one) is, for logs, /healthz and bench output."""
    loop = loop or asyncio.get_running_loop()
    module = type(loop).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
