"""Start warming a provider's connection when a call is offered, best effort and not awaited
(the LLM's: ``llm/warm.py``; the TTS's: ``tts/warm.py``). A failure is only logged: the turn
connects by itself, and its own failure goes through failover. Engines without a network
connection have no ``warmup()``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from bridge.providers.base import ProviderError

RUNNING: set[asyncio.Task[None]] = set()  # a reference each, until they finish


async def _warm(provider: object, kind: str, log: logging.Logger) -> None:
    warmup = getattr(provider, "warmup", None)  # only network engines have it
    if warmup is None:
        return
    try:
        await warmup()
    except ProviderError as exc:  # its text names the status or error class, never the key
        log.warning("%s warm-up failed: %s", kind, exc)
    except Exception as exc:  # best effort; never an unread task error
        log.warning("%s warm-up failed: %s", kind, type(exc).__name__)


def warm_first(providers: Sequence[object], enabled: bool, kind: str, log: logging.Logger) -> None:
    """Start warming the first provider of a failover list (the one the first turn uses)."""
    if enabled and providers:
        task = asyncio.create_task(_warm(providers[0], kind, log))
        RUNNING.add(task)
        task.add_done_callback(RUNNING.discard)
