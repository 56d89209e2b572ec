"""Warm the TTS connection when a call starts (``tts.warmup_on_call``).

A call's first reply otherwise pays the connection set-up (TCP, TLS, and for the WebSocket
API the upgrade) whenever the warm connection went stale between calls: httpx drops an idle
connection after KEEPALIVE_S, and the WebSocket spare is replaced after SPARE_MAX_AGE_S.
bench/tts_warmup.py measured the saving. Best effort and not awaited: a failure here is
only logged, the turn connects by itself (and its own failure goes through failover).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from bridge.providers.base import ProviderError

log = logging.getLogger(__name__)
_running: set[asyncio.Task[None]] = set()  # a reference each, until they finish


async def _warm(tts: object) -> None:
    warmup = getattr(tts, "warmup", None)  # only network TTS have it
    if warmup is None:
        return
    try:
        await warmup()
    except ProviderError as exc:
        log.warning("tts warm-up failed: %s", exc)
    except Exception as exc:  # best effort: the first reply connects anyway; never an unread task error
        log.warning("tts warm-up failed: %s", type(exc).__name__)


def warm_on_call(tts: Sequence[object], enabled: bool) -> None:
    """Start warming the first TTS in the failover list (the one the first reply uses)."""
    if enabled and tts:
        task = asyncio.create_task(_warm(tts[0]))
        _running.add(task)
        task.add_done_callback(_running.discard)
