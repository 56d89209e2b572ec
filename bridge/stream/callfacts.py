"""Decode the call facts the XML server put in Plivo's extraHeaders/sipHeaders, and verify the
stream token (same scheme as xml_server.callfacts, which this package must not import)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re

MARKER = "ZZ"
TOKEN_CONTEXT = b"voice-bridge-stream:"
_HEX = re.compile(r"(?:[0-9A-F]{2})+")


def decode_value(value: str) -> str:
    """"ZZ2B3931" -> "+91"; plain alnum values pass through; a malformed marker stays as is."""
    if value.startswith(MARKER) and _HEX.fullmatch(value[len(MARKER) :]):
        try:
            return bytes.fromhex(value[len(MARKER) :]).decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def parse_extra_headers(raw: object) -> dict[str, str]:
    """Plivo's start.extra_headers: "k1=v1,k2=v2" (as configured), or a JSON object; values
    decoded. Anything else gives an empty dict (the token check then refuses the stream)."""
    pairs: dict[str, str] = {}
    if isinstance(raw, dict):
        items = [(str(k), str(v)) for k, v in raw.items()]
    elif isinstance(raw, str):
        text = raw.strip()
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except ValueError:
                return {}
            return parse_extra_headers(obj) if isinstance(obj, dict) else {}
        items = []
        for part in re.split(r"[,;]", text):
            name, sep, value = part.partition("=")
            if sep:
                items.append((name.strip(), value.strip()))
    else:
        return {}
    for name, value in items:
        # Plivo may hand them back with its X-PH- prefix.
        key = name[5:] if name.lower().startswith("x-ph-") else name
        if key:
            pairs[key] = decode_value(value)
    return pairs


def expected_token(secret: str, call_uuid: str) -> str:
    message = TOKEN_CONTEXT + call_uuid.encode("utf-8")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def token_valid(secret: str, call_uuid: str, token: str) -> bool:
    if not call_uuid or not token:
        return False
    return hmac.compare_digest(expected_token(secret, call_uuid), token)
