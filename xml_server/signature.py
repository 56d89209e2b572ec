"""Plivo's V3 signature on webhooks (bridge.plivo_signature), checked against the URL Plivo
really called.

Behind a reverse proxy the request's own URL is not what Plivo signed: the configured public
base URL wins; else X-Forwarded-Proto/Host/Prefix, but only from a configured trusted proxy
(otherwise any client could choose the URL its signature is checked against); else the
request's own host URL.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from flask import Request

from bridge.plivo_signature import NonceStore, Verdict
from bridge.plivo_signature import verify as verify_signature

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(items: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def _trusted(remote: str | None, proxies: Sequence[Network]) -> bool:
    try:
        addr = ipaddress.ip_address(remote or "")
    except ValueError:
        return False
    return any(addr in net for net in proxies)


def public_url(request: Request, public_base_url: str, proxies: Sequence[Network] = ()) -> str:
    """The full URL (with query) that the caller of this request used."""
    if public_base_url:
        base = public_base_url.rstrip("/")
    elif _trusted(request.remote_addr, proxies):
        proto = _first(request.headers.get("X-Forwarded-Proto")) or request.scheme
        host = _first(request.headers.get("X-Forwarded-Host")) or request.host
        prefix = _first(request.headers.get("X-Forwarded-Prefix")).rstrip("/")
        base = f"{proto}://{host}{prefix}"
    else:
        base = f"{request.scheme}://{request.host}"
    query = request.query_string.decode("latin-1")
    return f"{base}{request.path}" + (f"?{query}" if query else "")


def _first(value: str | None) -> str:
    return (value or "").split(",")[0].strip()


def verify(request: Request, auth_token: str, public_base_url: str, nonces: NonceStore | None,
           proxies: Sequence[Network] = ()) -> Verdict:
    url = public_url(request, public_base_url, proxies)
    params = request.form.to_dict(flat=False) if request.method.upper() == "POST" else None
    return verify_signature(request.method, [url], request.headers.get, auth_token, params, nonces)
