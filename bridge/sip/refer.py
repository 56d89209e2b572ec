"""REFER as Plivo documents it for SIP-trunk calls (Zentrunk "SIP REFER" pages): the Refer-To
is ``sip:+E164@<trunk>.zt.plivo.com`` (other domains are blocked), Plivo answers 202, reports
the new call's progress in NOTIFYs carrying a message/sipfrag (RFC 3515 §2.4.5), and then BYEs
our leg itself. Pure helpers; the dialog side is SipServer.refer."""

from __future__ import annotations

import re

REFER_OUTCOME_TIMEOUT_S = 32.0  # Timer B: the transferred INVITE has failed by then
_SIPFRAG = re.compile(r"^\s*SIP/2\.0\s+(\d{3})")
_HOST = re.compile(r"sips?:(?:[^@;>]*@)?(?P<host>\[[^\]]+\]|[^:;>]+)")


def uri_host(uri: str) -> str:
    """"<sip:+91...@abc.zt.plivo.com:5060>;tag=x" -> "abc.zt.plivo.com"."""
    m = _HOST.search(uri)
    return m.group("host") if m else ""


def refer_to(target: str, trunk_host: str) -> str:
    """The Refer-To URI: a SIP URI is used as given; a number goes to the trunk's domain."""
    if target.startswith(("sip:", "sips:")):
        return target
    number = re.sub(r"[^0-9+]", "", target)
    if not number or not trunk_host:
        raise ValueError(f"cannot REFER to {target!r} without a trunk domain")
    return f"sip:{number}@{trunk_host}"


def sipfrag_status(body: bytes | str | None) -> int | None:
    """"SIP/2.0 200 OK" -> 200; None for anything else."""
    if body is None:
        return None
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    m = _SIPFRAG.match(text)
    return int(m.group(1)) if m else None
