"""Plivo's documented rules for the call facts an application sends, applied as Plivo applies
them, so the simulator drops what real Plivo would drop instead of forwarding it verbatim.

- sipHeaders (<Dial>/<User>): sent as ``X-PH-<name>`` only when the name is one capital letter
  then lower-case letters/digits (at most 24 characters with the prefix), the value letters,
  digits and ``%`` only and at most 120 characters (an older article: 48; the simulator uses the
  stricter limit unless told otherwise), and the name does not use a reserved prefix; other
  pairs are silently not sent (support article 360041883871; Dial XML reference).
- extraHeaders (<Stream>): at most 512 bytes; they reach the WebSocket as ``start.extra_headers``
  in the documented ``k1=v1;k2=v2`` form (audio-streaming page example).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.callfacts import MAX_EXTRA_HEADERS, MAX_VALUE, name_problem, value_problem

STRICT_VALUE_LIMIT = MAX_VALUE  # 48 (older article)
NEWER_VALUE_LIMIT = 120


@dataclass(frozen=True, slots=True)
class SentHeaders:
    sent: dict[str, str]  # name (without X-PH-) -> value, as they reach the SIP INVITE
    dropped: tuple[str, ...]  # "name: why"


def pairs(raw: str) -> list[tuple[str, str]]:
    out = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, _, value = part.partition("=")
        out.append((name.strip(), value.strip()))
    return out


def sip_headers_as_sent(raw: str, value_limit: int = STRICT_VALUE_LIMIT) -> SentHeaders:
    sent: dict[str, str] = {}
    dropped: list[str] = []
    for name, value in pairs(raw):
        problem = name_problem(name) or value_problem(value, value_limit)
        if problem:
            dropped.append(f"{name}: {problem}")
        else:
            sent[name] = value
    return SentHeaders(sent, tuple(dropped))


class ExtraHeadersError(ValueError):
    """extraHeaders Plivo would not accept."""


def extra_headers_as_delivered(raw: str) -> str:
    """The attribute as the application wrote it -> start.extra_headers as Plivo delivers it."""
    if len(raw.encode("utf-8")) > MAX_EXTRA_HEADERS:
        size = len(raw.encode("utf-8"))
        raise ExtraHeadersError(f"extraHeaders is {size} bytes, over Plivo's {MAX_EXTRA_HEADERS}")
    return ";".join(f"{name}={value}" for name, value in pairs(raw))
