"""Call facts carried from the answer webhook to the daemon, shared by both processes.

Plivo's sipHeaders (SIP leg) and the stream's extraHeaders accept only [A-Za-z0-9] in names
and values, so anything else travels hex-encoded behind a marker; and an HMAC token lets the
daemon trust a stream's start. The XML server encodes and signs (xml_server/app.py), the
daemon decodes and verifies (bridge/daemon/calls.py, bridge/stream/server.py). Pure
functions: xml_server may import this module.
"""

from __future__ import annotations

import hashlib
import hmac
import re

# A value that is not plain alnum (or that starts with the marker itself) travels as
# "ZZ" + uppercase hex of its UTF-8 bytes: "+9198..." -> "ZZ2B3931...". Unambiguous both ways.
MARKER = "ZZ"
TOKEN_CONTEXT = b"voice-bridge-stream:"
_ALNUM = re.compile(r"[A-Za-z0-9]+")
_HEX = re.compile(r"(?:[0-9A-F]{2})+")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
# Plivo drops headers whose names start with these.
_RESERVED_PREFIXES = ("ph", "plivo", "fs", "sipauth", "zt", "twilio")


def encode_value(value: str) -> str:
    if not value:
        return ""
    if _ALNUM.fullmatch(value) and not value.startswith(MARKER):
        return value
    return MARKER + value.encode("utf-8").hex().upper()


def decode_value(value: str) -> str:
    """"ZZ2B3931" -> "+91"; plain alnum values pass through; a malformed marker stays as is."""
    if value.startswith(MARKER) and _HEX.fullmatch(value[len(MARKER) :]):
        try:
            return bytes.fromhex(value[len(MARKER) :]).decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


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


def token_valid(secret: str, call_uuid: str, token: str) -> bool:
    if not call_uuid or not token:
        return False
    return hmac.compare_digest(stream_token(secret, call_uuid), token)
