"""Keyed pseudonymous subject ids: HMAC-SHA256 of a person's E.164 number with a per-install
key (data_dir/outbound/pseudonym.key). Every transcript, recording and audit row carries the
subject id of the person on the other end, so `forget` finds their data without the number
being stored next to it. The same key and function serve the outbound audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

import phonenumbers

KEY_FILE = "pseudonym.key"
_SIP_USER = re.compile(r"^(?:sips?:|tel:)?([^@;>]+)")


def key_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "outbound" / KEY_FILE


def load_key(data_dir: str | Path) -> bytes:
    """The install's key, created on first use (two processes racing both end up with one)."""
    path = key_path(data_dir)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def subject_of(key: bytes, e164: str) -> str:
    return hmac.new(key, e164.encode(), hashlib.sha256).hexdigest()[:24]


def canonical_number(text: str, region: str = "IN") -> str | None:
    """E.164 of a number written any usual way, including a SIP/tel URI's user part; None when
    it is not a phone number (a SIP user name, anonymous)."""
    raw = (text or "").strip().strip("<>")
    match = _SIP_USER.match(raw)
    user = match.group(1) if match else raw
    if sum(c.isdigit() for c in user) < 6:
        return None
    try:
        parsed = phonenumbers.parse(user, region.upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def remote_party(direction: str, from_uri: str, to_uri: str, headers: dict[str, str] | None = None) -> str:
    """The person's side of a call: the caller of an inbound call, the callee of an outbound one.
    Calls Plivo hands to the bridge carry the real parties in its X-PH headers."""
    facts = headers or {}
    if facts.get("From") or facts.get("To"):
        plivo_direction = facts.get("Direction", direction)
        return facts.get("To", "") if plivo_direction == "outbound" else facts.get("From", "")
    return to_uri if direction == "outbound" else from_uri


def call_subject(data_dir: str | Path, region: str, direction: str, from_uri: str, to_uri: str,
                 headers: dict[str, str] | None = None) -> str:
    """The subject id of a call's person, or "" when that side is not a phone number."""
    number = canonical_number(remote_party(direction, from_uri, to_uri, headers), region)
    return subject_of(load_key(data_dir), number) if number else ""
