"""Logging for the XML server process: one JSON object per line (journald/gunicorn friendly),
phone numbers masked unless allowed. Its own small copy, since this process may import only
the settings and privacy helpers from the bridge package."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from bridge.privacy import mask_phone_numbers

_STD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class _JsonLines(logging.Formatter):
    def __init__(self, mask: bool) -> None:
        super().__init__()
        self._mask = mask

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD and not key.startswith("_"):
                out[key] = value if isinstance(value, (int, float, bool, type(None))) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if self._mask:
            out = {k: mask_phone_numbers(v) if isinstance(v, str) else v for k, v in out.items()}
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str, log_phone_numbers: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines(mask=not log_phone_numbers))
    logger = logging.getLogger("xml_server")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
