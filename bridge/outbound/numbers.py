"""Phone numbers to E.164 with `phonenumbers` (national formats read in a default region).

Dialing uses :func:`normalise` (full validation). Bulk registry imports use
:func:`normalise_fast`, which skips phonenumbers for the common clean Indian formats: an invalid
entry in a block list only over-blocks, which is the safe side.
"""

from __future__ import annotations

import re

import phonenumbers


class InvalidNumber(ValueError):
    """The text is not a dialable phone number; the message says why (without echoing it)."""


_MAX_RAW = 40
_IN_MOBILE = re.compile(r"^(?:\+91|0091|91|0)?([6-9]\d{9})$")
_SEPARATORS = str.maketrans("", "", " -().\t")
_PARSE_ERRORS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.NumberParseException.NOT_A_NUMBER: "not digits",
    phonenumbers.NumberParseException.TOO_LONG: "too long",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
}


def normalise(raw: str, default_region: str = "IN") -> str:
    """E.164 ("+919876543210") for a valid number, else :class:`InvalidNumber`."""
    text = (raw or "").strip()
    if not text:
        raise InvalidNumber("empty number")
    if len(text) > _MAX_RAW:
        raise InvalidNumber("number too long")
    try:
        parsed = phonenumbers.parse(text, default_region.upper())
    except phonenumbers.NumberParseException as exc:
        why = _PARSE_ERRORS.get(exc.error_type, "unparseable")
        raise InvalidNumber(f"not a phone number ({why})") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidNumber("not a valid number for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalise_fast(raw: str, default_region: str = "IN") -> str:
    """Like :func:`normalise`, with a fast path for clean Indian mobile numbers."""
    compact = raw.strip().translate(_SEPARATORS)
    if default_region.upper() == "IN" or compact.startswith(("+91", "0091")):
        match = _IN_MOBILE.match(compact)
        if match:
            return "+91" + match.group(1)
    return normalise(raw, default_region)


def e164_to_int(e164: str) -> int:
    """The registry's key: the E.164 digits as an integer (8 bytes in SQLite, rowid lookups)."""
    return int(e164.lstrip("+"))


def int_to_e164(value: int) -> str:
    return f"+{value}"


def is_e164(value: str) -> bool:
    return bool(re.fullmatch(r"\+[1-9]\d{6,14}", value))



def region_of(e164: str) -> str:
    """The ISO region code of a valid E.164 number ("IN"), or "" when it has none (e.g. +800)."""
    for length in (1, 2, 3):  # a country code that is one region (+91) needs no parse
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(e164[1:1 + length] or 0))
        if regions:
            if len(regions) == 1 and regions[0] != "001":
                return str(regions[0])
            break
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164)) or ""
    except phonenumbers.NumberParseException:
        return ""
