"""Call facts carried from the answer webhook to the daemon, shared by both processes.

Plivo's custom SIP header rules (support article 360041883871, Dial/User XML reference): the
name is ``X-PH-`` + one capital letter + lower-case letters/digits, at most 24 characters; the
value is alphanumeric plus ``%`` (Plivo's documented escape), at most 120 characters (an older
article says 48: we keep to 48); pairs that break a rule are silently not sent. The stream's
``extraHeaders`` allow at most 512 bytes. So names here are conforming, other characters travel
%-encoded, and a value that would still be too long is left out (and logged by the caller).

An HMAC token binds the facts a stream carries to its call, so the daemon can trust a stream's
start. The XML server encodes and signs (xml_server/app.py), the daemon decodes and verifies
(bridge/daemon/calls.py, bridge/stream/server.py). Pure functions: xml_server may import this.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

TOKEN_CONTEXT = b"voice-bridge-stream-v2:"
TOKEN_CHARS = 32  # 128 bits of HMAC-SHA256, hex: fits the 48-character value limit
PREFIX = "X-PH-"
MAX_NAME = 24  # the whole header name, X-PH- included (the stricter reading)
MAX_VALUE = 48  # the older, stricter of Plivo's two documented limits (the newer says 120)
MAX_EXTRA_HEADERS = 512  # <Stream extraHeaders>, bytes

# The facts, under names that follow Plivo's casing rule.
CALL_UUID, FROM, TO, DIRECTION, AGENT, TOKEN = "Calluuid", "From", "To", "Direction", "Agent", "Token"
KNOWN = (CALL_UUID, FROM, TO, DIRECTION, AGENT, TOKEN)
_CANONICAL = {name.lower(): name for name in KNOWN} | {"calluuid": CALL_UUID}

_NAME = re.compile(r"[A-Z][a-z0-9]*")
_VALUE = re.compile(r"[A-Za-z0-9%]*")
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
# Plivo drops headers whose names start with these (case-insensitive), and ClientRegion.
_RESERVED_PREFIXES = ("ph", "plivo", "fs", "sipauth", "zt", "twilio")
_RESERVED_NAMES = ("clientregion",)


def name_problem(name: str) -> str:
    """Why Plivo would not send ``X-PH-<name>`` ("" when it would)."""
    if not _NAME.fullmatch(name):
        return "must be one capital letter then lower-case letters or digits"
    if len(PREFIX) + len(name) > MAX_NAME:
        return f"X-PH-{name} is longer than {MAX_NAME} characters"
    if name.lower().startswith(_RESERVED_PREFIXES) or name.lower() in _RESERVED_NAMES:
        return "uses a prefix or name Plivo reserves"
    return ""


def value_problem(value: str, limit: int = MAX_VALUE) -> str:
    if not _VALUE.fullmatch(value):
        return "has characters other than letters, digits and %"
    if len(value) > limit:
        return f"is {len(value)} characters, over {limit}"
    return ""


def encode_value(value: str) -> str:
    """%-encode every byte that is not a letter or digit: "+91 98" -> "%2B91%2098"."""
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in value.encode("utf-8"))


def decode_value(value: str) -> str:
    """"%2B91" -> "+91"; a value with characters Plivo would not carry stays as it is."""
    if "%" not in value or not _VALUE.fullmatch(value):
        return value
    return unquote(value, errors="replace")


@dataclass(frozen=True, slots=True)
class Fitted:
    """The facts that fit Plivo's rules (encoded) and the names left out."""

    encoded: dict[str, str]
    dropped: tuple[str, ...]

    def header_text(self) -> str:
        """"Calluuid=ab%2D12,From=%2B91..." (the form sipHeaders and extraHeaders take)."""
        return ",".join(f"{k}={v}" for k, v in self.encoded.items())


def fit(facts: Mapping[str, str]) -> Fitted:
    """Encode the facts; a bad name is a programming error (ValueError), a value too long after
    encoding is dropped (Plivo would drop it silently). Empty values are skipped."""
    encoded: dict[str, str] = {}
    dropped: list[str] = []
    for name, value in facts.items():
        problem = name_problem(name)
        if problem:
            raise ValueError(f"header name {name!r} is not usable in Plivo sipHeaders: {problem}")
        if not value:
            continue
        text = encode_value(value)
        if len(text) > MAX_VALUE:
            dropped.append(name)
        else:
            encoded[name] = text
    return Fitted(encoded, tuple(dropped))


def encode_headers(facts: Mapping[str, str]) -> str:
    """{"Calluuid": "ab-12", "From": "+91..."} -> "Calluuid=ab%2D12,From=%2B91..."; ValueError if
    a value does not fit (use :func:`fit` to drop such values instead)."""
    fitted = fit(facts)
    if fitted.dropped:
        raise ValueError(f"header value(s) over {MAX_VALUE} characters: {', '.join(fitted.dropped)}")
    return fitted.header_text()


def configured_value_problem(name: str, value: str) -> str:
    """For start-up checks: why a configured value could not ride as X-PH-<name>."""
    encoded = encode_value(value)
    if len(encoded) > MAX_VALUE:
        return f"{name} {value!r} is {len(encoded)} characters once %-encoded, over Plivo's {MAX_VALUE}"
    return ""


def fact_key(header_name: str) -> str | None:
    """The fact a received header carries: ``X-PH-From`` (Plivo's normal form) -> "From", and
    ``X-From`` / ``X-CallUUID`` (Plivo's raw mode, used when the inbound leg authenticated with
    SIP credentials) for the names the bridge sends. None for any other header."""
    lower = header_name.lower()
    if lower.startswith("x-ph-"):
        rest = header_name[5:]
        return _CANONICAL.get(rest.lower(), rest) if rest else None
    if lower.startswith("x-"):
        return _CANONICAL.get(lower[2:])
    return None


def facts_from_sip_headers(headers: Iterable[tuple[str, list[str]]]) -> dict[str, str]:
    """The still-encoded call facts from an INVITE's (name, values) headers (first value of each)."""
    facts: dict[str, str] = {}
    for name, values in headers:
        key = fact_key(name)
        if key and values and key not in facts:
            facts[key] = values[0]
    return facts


def _token_message(facts: Mapping[str, str]) -> bytes:
    body = "\n".join(f"{k}={facts[k]}" for k in sorted(facts) if k != TOKEN)
    return TOKEN_CONTEXT + body.encode("utf-8")


def stream_token(secret: str, call_uuid: str, facts: Mapping[str, str] | None = None) -> str:
    """HMAC-SHA256 over the call's UUID and the (decoded) facts sent with it, 32 hex chars: valid
    for that call and those facts only, so a leaked token cannot carry another caller's number."""
    bound = {**(facts or {}), CALL_UUID: call_uuid}
    return hmac.new(secret.encode("utf-8"), _token_message(bound), hashlib.sha256).hexdigest()[:TOKEN_CHARS]


def token_valid(secret: str, call_uuid: str, token: str, facts: Mapping[str, str] | None = None) -> bool:
    if not call_uuid or not token:
        return False
    return hmac.compare_digest(stream_token(secret, call_uuid, facts), token)
