"""Send a webhook the way Plivo does: form-encoded, V3-signed when an auth token is given."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from bridge.simulator.plivo.signing import sign_v3


@dataclass(frozen=True, slots=True)
class WebhookReply:
    status: int
    body: str
    content_type: str


def post_webhook_sync(url: str, params: dict[str, str], auth_token: str | None, method: str = "POST",
                      timeout: float = 10.0) -> WebhookReply:
    method = method.upper()
    data: bytes | None = None
    target = url
    if method == "GET":
        parts = urlsplit(url)
        query = "&".join(q for q in (parts.query, urlencode(params)) if q)
        target = urlunsplit(parts._replace(query=query))
    else:
        data = urlencode(params).encode()
    headers = {"User-Agent": "PlivoSimulator", "Content-Type": "application/x-www-form-urlencoded"}
    if auth_token:
        headers.update(sign_v3(auth_token, method, target, params if method == "POST" else None))
    request = urllib.request.Request(target, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return WebhookReply(resp.status, resp.read().decode("utf-8", "replace"),
                                resp.headers.get("Content-Type", ""))
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace")
        return WebhookReply(exc.code, body, exc.headers.get("Content-Type", ""))


async def post_webhook(url: str, params: dict[str, str], auth_token: str | None,
                       method: str = "POST") -> WebhookReply:
    return await asyncio.to_thread(post_webhook_sync, url, params, auth_token, method)


def sibling_url(url: str, path: str) -> str:
    """http://h/x/answer -> http://h/x/hangup (same base, other endpoint)."""
    parts = urlsplit(url)
    base = parts.path.rsplit("/", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, f"{base}/{path.lstrip('/')}", "", ""))
