"""Warm the LLM connection when a call is offered (``llm.warmup_on_call``).

The first request of a process, and any request after the pool dropped its idle connection
(openai_wire.KEEPALIVE_S), otherwise pays TCP and TLS set-up (2-3 round trips: 100-300 ms
to a distant endpoint). Only the configured endpoint, only when a call is offered; best effort
and not awaited: a failure is only logged, the turn connects by itself (and its own failure
goes through failover). Engines without a network connection have no ``warmup()``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bridge.providers.warm_up import RUNNING, warm_first

log = logging.getLogger(__name__)
_running = RUNNING  # the warm-ups under way (tests wait for them)


def warm_on_call(llms: Sequence[object], enabled: bool) -> None:
    """Start warming the first LLM in the failover list (the one the first turn uses)."""
    warm_first(llms, enabled, "llm", log)
