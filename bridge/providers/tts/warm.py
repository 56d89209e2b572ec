"""Warm the TTS connection when a call starts (``tts.warmup_on_call``).

A call's first reply otherwise pays the connection set-up (TCP, TLS, and for the WebSocket
API the upgrade) whenever the warm connection went stale between calls: httpx drops an idle
connection after KEEPALIVE_S, and the WebSocket spare is replaced after SPARE_MAX_AGE_S.
bench/tts_warmup.py measured the saving. Best effort and not awaited: a failure here is
only logged, the turn connects by itself (and its own failure goes through failover).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bridge.providers.warm_up import RUNNING, warm_first

log = logging.getLogger(__name__)
_running = RUNNING  # the warm-ups under way (tests wait for them)


def warm_on_call(tts: Sequence[object], enabled: bool) -> None:
    """Start warming the first TTS in the failover list (the one the first reply uses)."""
    warm_first(tts, enabled, "tts", log)
