"""Plivo's words for how a call ended, as a campaign outcome (answered, busy, no-answer,
failed, machine). Used by the XML server's hangup/status callbacks and by the reconciliation
that reads Plivo's call records (CDRs) after a crash.

Sources (Plivo's Call API and XML request-parameter pages): the hangup callback posts
``CallStatus`` (completed, busy, failed, timeout, no-answer, cancel), ``HangupCause`` (e.g.
NORMAL_CLEARING, USER_BUSY, NO_ANSWER), ``Duration``/``BillDuration``; call records carry
``hangup_cause_name`` ("Normal Hangup", "Busy Line", "No Answer", ...) and ``bill_duration``;
with ``machine_detection`` the answer and hangup requests carry ``Machine`` = true/false.
"""

from __future__ import annotations

_BUSY = {"busy", "user_busy", "busy line", "busy_line"}
_NO_ANSWER = {"no-answer", "no_answer", "no answer", "timeout", "no_user_response", "allotted_timeout",
              "ring timeout reached", "recovery_on_timer_expire"}
_CANCELLED = {"cancel", "cancelled", "originator_cancel"}


def _norm(text: str) -> str:
    return text.strip().lower()


def outcome_from_plivo(call_status: str, hangup_cause: str = "", duration: str = "",
                       machine: str = "") -> str:
    """The outcome of a finished Plivo call from its callback/record fields."""
    if _norm(machine) == "true":
        return "machine"
    status, cause = _norm(call_status), _norm(hangup_cause)
    if status in _BUSY or cause in _BUSY:
        return "busy"
    if status in _NO_ANSWER or cause in _NO_ANSWER:
        return "no-answer"
    try:
        answered = float(duration or 0) > 0
    except ValueError:
        answered = False
    if status in ("completed", "in-progress", "answered") and (answered or not duration):
        return "answered"
    if answered:
        return "answered"
    if status in _CANCELLED or cause in _CANCELLED:
        return "no-answer"  # we (ring timeout) or the network gave up before an answer
    return "failed"
