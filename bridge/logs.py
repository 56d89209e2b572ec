"""Logging: JSON lines under systemd, readable text in a terminal; phone numbers masked.

Call ``setup_logging`` once per process. Structured fields go in ``extra={...}``; every string
field and the message pass through the masking filter unless numbers are allowed by settings.
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


class MaskingFilter(logging.Filter):
    """Masks phone numbers in the rendered message and in string extra fields."""

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
        return True


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
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        extras = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{ts}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += f"  [{extras}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "INFO", fmt: str = "auto", log_phone_numbers: bool = False) -> None:
    if fmt == "auto":
        under_systemd = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
        fmt = "json" if under_systemd or not sys.stderr.isatty() else "text"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(CallContextFilter())  # call_uuid: Plivo's CallUUID on a call's lines
    if not log_phone_numbers:
        handler.addFilter(MaskingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # aiosipua on 3.11 logs a harmless AssertionError at UDP start (DESIGN.md, Wire notes: SIP stack, 11)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL if level != "DEBUG" else logging.DEBUG)
