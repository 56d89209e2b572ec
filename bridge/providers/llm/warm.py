"""Warm the LLM connection when a call is offered (``llm.warmup_on_call``), and again when the
caller starts speaking if the client's pool sat idle since (``llm.warmup_on_speech``).

The first request of a process, and any request after the pool dropped its idle connection
(openai_wire.KEEPALIVE_S), otherwise pays TCP and TLS set-up (2-3 round trips: 100-300 ms
to a distant endpoint). Only the configured endpoint, only when a call is offered; best effort
and not awaited: a failure is only logged, the turn connects by itself (and its own failure
goes through failover). Engines without a network connection have no ``warmup()``.

Why a second one: the pool drops a connection idle for KEEPALIVE_S (5 s), so a first question
asked more than 5 s after the offer (a long greeting, a caller who waits) opened its
connection on the caller's time after all. The caller's speech onset comes at least an
utterance and an endpointing window before the request: time for the GET to open or
refresh the connection. Only when the provider says a warm-up is due (``warmup_due()``:
nothing under way on its pool, no connection left idle in the last 2 s, no warm-up failed in
the last 30 s): at 150 calls the shared pool is busy once replies flow, and this sent one GET
a run (bench/voice_to_voice.py). A request that starts while the GET is under way waits for it
briefly (openai_chat.JOIN_WARM_S) rather than open a second, cold connection beside the one
the GET holds.
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


def warm_on_speech(llms: Sequence[object], index: int, enabled: bool) -> None:
    """The caller started speaking: warm the LLM the next turn uses (``llms[index]``, the
    failover's current one) if its pool has been idle long enough for it to matter."""
    if not enabled or index >= len(llms):
        return
    due = getattr(llms[index], "warmup_due", None)  # only network engines have it
    if due is not None and due():
        warm_first(llms[index:], True, "llm", log)
