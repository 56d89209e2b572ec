"""The provider's call id (Plivo's CallUUID) on every log line of a call.

The daemon knows a call by its transport's id (the SIP Call-ID, the stream's id); the XML
server logs Plivo's CallUUID. ``bind`` records the CallUUID for a transport id, ``enter``
sets it for the current task (a call's agent task, and the tasks it starts);
``CallContextFilter`` then adds ``call_uuid`` to every record made in the call's tasks or
carrying its ``call_id`` extra, so the daemon's and the XML server's lines of one call join
on one field. Pure: no I/O.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

CALL_UUID: ContextVar[str] = ContextVar("call_uuid", default="")
_by_call_id: dict[str, str] = {}  # transport call id -> provider call id, while the call lives


def bind(call_id: str, call_uuid: str) -> None:
    """Remember the provider's id of the call known here as ``call_id``."""
    if call_uuid:
        _by_call_id[call_id] = call_uuid


def enter(call_id: str) -> None:
    """In a task of the call (e.g. its agent): log lines made here carry its call_uuid."""
    call_uuid = _by_call_id.get(call_id, "")
    if call_uuid:
        CALL_UUID.set(call_uuid)


def unbind(call_id: str) -> None:
    _by_call_id.pop(call_id, None)


def call_uuid_of(call_id: str) -> str:
    return _by_call_id.get(call_id, "")


class CallContextFilter(logging.Filter):
    """Adds ``call_uuid`` to a record that has none (a handler filter: runs for every logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "call_uuid", None):
            return True
        # A line naming its call is about that call, whatever task logs it.
        call_id = getattr(record, "call_id", None)
        value = _by_call_id.get(str(call_id), "") if call_id else CALL_UUID.get()
        if value:
            record.call_uuid = value
        return True
