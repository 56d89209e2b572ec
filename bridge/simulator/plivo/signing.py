"""Plivo's X-Plivo-Signature-V3, written from the algorithm (not with the SDK's helpers), so the
XML server's SDK-based check is tested against an independent signer.

signature = base64(HMAC-SHA256(auth_token, base + "." + nonce)), where for a POST with form
params base = scheme://host/path + "?" + sorted query + ("." if query) + sorted key+value pairs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

Params = Mapping[str, str | list[str]]


def _as_lists(params: Params) -> dict[str, list[str]]:
    return {k: list(v) if isinstance(v, list) else [v] for k, v in params.items()}


def _sorted_query(values: dict[str, list[str]]) -> str:
    return "&".join("&".join(f"{k}={v}" for v in sorted(values[k])) for k in sorted(values))


def signing_base(method: str, url: str, params: Params | None = None) -> str:
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    query = {k: list(v) for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    form = _as_lists(params or {})
    if method.upper() == "GET":
        query.update(form)
        q = _sorted_query(query)
        return f"{base}?{q}" if q else base
    q = _sorted_query(query)
    if not form:
        return f"{base}?{q}" if q else base
    body = "".join("".join(f"{k}{v}" for v in sorted(form[k])) for k in sorted(form))
    return f"{base}?{q}{'.' if q else ''}{body}"


def sign_v3(auth_token: str, method: str, url: str, params: Params | None = None,
            nonce: str | None = None) -> dict[str, str]:
    """The two headers Plivo sends with a webhook."""
    nonce = nonce or secrets.token_hex(10)
    message = f"{signing_base(method, url, params)}.{nonce}".encode()
    digest = hmac.new(auth_token.encode(), message, hashlib.sha256).digest()
    return {
        "X-Plivo-Signature-V3": base64.b64encode(digest).decode(),
        "X-Plivo-Signature-V3-Nonce": nonce,
    }
