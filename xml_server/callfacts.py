"""Call facts carried from the answer webhook to the daemon: Plivo's sipHeaders (SIP leg) and
the stream's extraHeaders accept only [A-Za-z0-9] in names and values, so anything else is
hex-encoded behind a marker; and the HMAC token that lets the daemon trust a stream's start.

The daemon decodes with ``bridge.stream.callfacts`` (same scheme; tests check both agree).
"""

from __future__ import annotations

import hashlib
import hmac
import re

# A value that is not plain alnum (or that starts with the marker itself) travels as
# "ZZ" + uppercase hex of its UTF-8 bytes: "+9198..." -> "ZZ2B3931...". Unambiguous both ways.
MARKER = "ZZ"
_ALNUM = re.compile(r"[A-Za-z0-9]+")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
# Plivo drops headers whose names start with these.
_RESERVED_PREFIXES = ("ph", "plivo", "fs", "sipauth", "zt", "twilio")
TOKEN_CONTEXT = b"voice-bridge-stream:"


def encode_value(value: str) -> str:
    if not value:
        return ""
    if _ALNUM.fullmatch(value) and not value.startswith(MARKER):
        return value
    return MARKER + value.encode("utf-8").hex().upper()


def encode_headers(facts: dict[str, str]) -> str:
    """{"CallUUID": "ab-12", "From": "+91..."} -> "CallUUID=ZZ...,From=ZZ..." (empty values skipped)."""
    parts = []
    for name, value in facts.items():
        if not _NAME.fullmatch(name) or name.lower().startswith(_RESERVED_PREFIXES):
            raise ValueError(f"header name {name!r} is not usable in Plivo sipHeaders")
        if value:
            parts.append(f"{name}={encode_value(value)}")
    return ",".join(parts)


def stream_token(secret: str, call_uuid: str) -> str:
    """HMAC-SHA256 over the call's UUID: valid for that call only, alnum (hex)."""
    message = TOKEN_CONTEXT + call_uuid.encode("utf-8")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
