"""Warm the LLM connection when a call is offered (``llm.warmup_on_call``).

The first request of a process, and any request after the pool dropped its idle connection
(openai_wire.KEEPALIVE_S), otherwise pays TCP and TLS set-up (2-3 round trips: 100-300 ms
to a distant endpoint). Only the configured endpoint, only when a call is offered; best effort
and not awaited: a failure is only logged, the turn connects by itself (and its own failure
goes through failover). Engines without a network connection have no ``warmup()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from bridge.providers.base import ProviderError

log = logging.getLogger(__name__)
_running: set[asyncio.Task[None]] = set()  # a reference each, until they finish


async def _warm(llm: object) -> None:
    warmup = getattr(llm, "warmup", None)  # only network LLMs have it
    if warmup is None:
        return
    try:
        await warmup()
    except ProviderError as exc:  # its text names the status or error class, never the key
        log.warning("llm warm-up failed: %s", exc)
    except Exception as exc:  # best effort: the first turn connects anyway; never an unread task error
        log.warning("llm warm-up failed: %s", type(exc).__name__)


def warm_on_call(llms: Sequence[object], enabled: bool) -> None:
    """Start warming the first LLM in the failover list (the one the first turn uses)."""
    if enabled and llms:
        task = asyncio.create_task(_warm(llms[0]))
        _running.add(task)
        task.add_done_callback(_running.discard)
