"""Plivo's hangup/status/answer callbacks for calls a campaign placed (plivo-api path), written
into the campaign store (outbound.sqlite) by the XML server.

The campaign row is found by our call id (``vb_call``), which the dialer put into the answer
and hangup URLs; those URLs are covered by the webhook signature, so only Plivo can write an
outcome. The retry policy is the campaign's: a retryable outcome with attempts left goes back
to ``queued`` (due after ``outbound.retry_delay_s``) and the next run dials it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping

from bridge.outbound.campaign_store import CampaignStore
from bridge.outbound.db import OUTBOUND_FILE, connect, outbound_dir
from bridge.outbound.outcomes import outcome_from_plivo
from bridge.settings import Settings

log = logging.getLogger(__name__)

# CallStatus values that end a call (Plivo hangup callback / callback_url events).
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "timeout", "no-answer", "cancel", "canceled"})


def record_plivo_outcome(settings: Settings, hint: str, params: Mapping[str, str],
                         outcome: str | None = None) -> str | None:
    """Store the outcome of the campaign call ``hint`` from Plivo's callback ``params``.
    Returns the row's new state, or None when no in-flight campaign row has this id (not a
    campaign call, or a repeated callback: nothing changes)."""
    if not hint or len(hint) > 64 or not hint.isalnum():
        return None
    if outcome is None:
        if params.get("CallStatus", "").lower() not in FINAL_STATUSES and params.get("Machine") != "true":
            return None
        outcome = outcome_from_plivo(params.get("CallStatus", ""), params.get("HangupCause", ""),
                                     params.get("BillDuration") or params.get("Duration", ""),
                                     params.get("Machine", ""))
    out = settings.outbound
    duration: float | None = None
    with contextlib.suppress(ValueError):
        duration = float(params.get("Duration", ""))
    conn = connect(outbound_dir(settings.daemon.data_dir) / OUTBOUND_FILE)
    try:
        state = CampaignStore(conn).record_outcome(
            ("hint", hint), outcome, retry=outcome in out.retry_on, max_attempts=out.max_attempts,
            retry_at=time.time() + out.retry_delay_s, call_id=params.get("CallUUID", ""),
            detail=_detail(params), duration_s=duration,
        )
    finally:
        conn.close()
    if state is not None:
        log.info("campaign call outcome", extra={"vb_call": hint, "outcome": outcome, "state": state})
    return state


def _detail(params: Mapping[str, str]) -> str:
    parts = [f"{k}={params[k]}" for k in ("CallStatus", "HangupCause", "Machine") if params.get(k)]
    return ("Plivo: " + " ".join(parts))[:200] if parts else "Plivo callback"
