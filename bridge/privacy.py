"""Masking and redaction of personal data (DPDPA): numbers, emails, Aadhaar, PAN.

Pure functions, used by logging, transcripts, metrics labels and the XML server.
"""

from __future__ import annotations

import re

# +91 98765 43210, 09876543210, 9876543210, sip:+919876543210@host, and URL-encoded
# From=%2B919876543210 (access logs, callback URLs). Masking needs 10+ digits (an Indian
# national number) so times in log lines stay readable; over-masking a port range is the safe
# failure.
_PHONE = re.compile(r"(?:%2[Bb]|(?<![\w])\+?)\d(?:[ -]?\d){8,15}(?![\w])")
_MIN_DIGITS = 10
# Timestamps that look like long digit runs: 20261201-163838 / 20261201T163838 (file names)
# and 2026-12-01 16 (the start of "2026-12-01 16:38:38"). Never with a leading "+".
_STAMP = re.compile(
    r"^(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])[-_ ]?(?:[01]\d|2[0-3])[0-5]\d[0-5]\d$"
    r"|^(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?: (?:[01]\d|2[0-3]))?$"
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_AADHAAR = re.compile(r"(?<!\d)\d{4}[ -]?\d{4}[ -]?\d{4}(?!\d)")
_PAN = re.compile(r"\b[A-Z]{5}\d{4}[A-Z]\b")


def mask_number(number: str) -> str:
    """Keep the last 2 digits only: "+919876543210" -> "+91********10" style masking."""
    digits = [c for c in number if c.isdigit()]
    if len(digits) < 5:
        return number
    keep_head = 3 if number.startswith("+") else 0
    seen = 0
    out = []
    total = len(digits)
    for ch in number:
        if ch.isdigit():
            seen += 1
            if seen <= keep_head - 1 or seen > total - 2:
                out.append(ch)
            else:
                out.append("*")
        else:
            out.append(ch)
    return "".join(out)


def _mask_match(match: re.Match[str]) -> str:
    text = match.group(0)
    if text[:3].upper() == "%2B":
        return "%2B" + mask_number("+" + text[3:])[1:]
    if sum(c.isdigit() for c in text) < _MIN_DIGITS or _STAMP.match(text):
        return text
    return mask_number(text)


def mask_phone_numbers(text: str) -> str:
    """Mask every phone-number-like run of 10+ digits in free text."""
    return _PHONE.sub(_mask_match, text)


def redact(text: str) -> str:
    """Redact emails, Aadhaar, PAN and phone numbers from transcripts and recordings metadata."""
    text = _EMAIL.sub("[email]", text)
    text = _AADHAAR.sub("[aadhaar]", text)
    text = _PAN.sub("[pan]", text)
    return _PHONE.sub(
        lambda m: "[phone]" if _mask_match(m) != m.group(0) else m.group(0),
        text,
    )
