"""Logging for both processes (the daemon and the XML server): JSON lines under systemd,
readable text in a terminal; phone numbers masked.

Call ``setup_logging`` once per process. Structured fields go in ``extra={...}``; the message,
every string field, the traceback (``exc``) and stack info pass through the masking filter
unless numbers are allowed by settings. Libraries that log through their own handlers (the
access logs of gunicorn and werkzeug) get the same filter on their loggers.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from bridge.callcontext import CallContextFilter
from bridge.privacy import mask_phone_numbers

_STD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS and not k.startswith("_")}


# Loggers whose records reach their own handlers (propagate = False) or may be set up before
# ours: the filter goes on the logger itself.
ACCESS_LOGGERS = ("gunicorn.access", "gunicorn.error", "werkzeug")
_FORMATTER = logging.Formatter()


class MaskingFilter(logging.Filter):
    """Masks phone numbers in the rendered message, string extra fields, the traceback and
    the stack info (rendered here, so every formatter prints the masked text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            message = str(record.msg)
        record.msg = mask_phone_numbers(message)
        record.args = None
        for key, value in _fields(record).items():
            if isinstance(value, str) and key != "call_uuid":  # an id: its digit runs are no number
                setattr(record, key, mask_phone_numbers(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_phone_numbers(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_phone_numbers(record.stack_info)
        return True


def _exc(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The traceback as the filter left it (masked), else rendered now."""
    if record.exc_text:
        return record.exc_text
    return formatter.formatException(record.exc_info) if record.exc_info else ""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            out[key] = value if isinstance(value, (int, float, bool, type(None))) else str(value)
        exc = _exc(self, record)
        if exc:
            out["exc"] = exc
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        extras = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{ts}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += f"  [{extras}]"
        exc = _exc(self, record)
        if exc:
            line += "\n" + exc
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def setup_logging(level: str = "INFO", fmt: str = "auto", log_phone_numbers: bool = False) -> None:
    if fmt == "auto":
        under_systemd = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
        fmt = "json" if under_systemd or not sys.stderr.isatty() else "text"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(CallContextFilter())  # call_uuid: Plivo's CallUUID on a call's lines
    for name in ACCESS_LOGGERS:
        lib = logging.getLogger(name)
        for old_filter in [f for f in lib.filters if isinstance(f, MaskingFilter)]:
            lib.removeFilter(old_filter)
    if not log_phone_numbers:
        handler.addFilter(MaskingFilter())
        for name in ACCESS_LOGGERS:
            logging.getLogger(name).addFilter(MaskingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # aiosipua on 3.11 logs a harmless AssertionError at UDP start (DESIGN.md, Wire notes: SIP stack, 11)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL if level != "DEBUG" else logging.DEBUG)
