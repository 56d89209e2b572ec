"""Answering a registrar's or trunk's digest challenge (401/407) on requests we send."""

from __future__ import annotations

from aiosipua import SipResponse
from aiosipua.auth import SipDigestAuth, build_credentials
from aiosipua.headers import parse_auth, stringify_auth


def answer_challenge(
    auth: SipDigestAuth, resp: SipResponse, method: str, uri: str
) -> tuple[str, str] | None:
    """(header name, value) answering the challenge in a 401/407, or None if none can be
    answered. The strongest algorithm offered wins (RFC 8760: SHA-256 before MD5)."""
    code = resp.status_code
    name = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
    challenges = [parse_auth(v) for v in resp.get_header_values(name)]
    challenges.sort(key=lambda c: 0 if c.params.get("algorithm", "MD5").upper() == "SHA-256" else 1)
    for challenge in challenges:
        cred = build_credentials(auth, challenge, method, uri)
        if cred is not None:
            return ("Authorization" if code == 401 else "Proxy-Authorization", stringify_auth(cred))
    return None
