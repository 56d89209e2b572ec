"""X-Plivo-Signature-V3 verification with the plivo SDK, against the URL Plivo really called.

Behind a reverse proxy the request's own URL is not what Plivo signed: the configured public
base URL wins, else X-Forwarded-Proto/Host/Prefix, else the request's host URL.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from flask import Request
from plivo.utils import validate_v3_signature

SIGNATURE_HEADER = "X-Plivo-Signature-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"


def public_url(request: Request, public_base_url: str) -> str:
    """The full URL (with query) that the caller of this request used."""
    if public_base_url:
        base = public_base_url.rstrip("/")
    else:
        proto = _first(request.headers.get("X-Forwarded-Proto")) or request.scheme
        host = _first(request.headers.get("X-Forwarded-Host")) or request.host
        prefix = _first(request.headers.get("X-Forwarded-Prefix")).rstrip("/")
        base = f"{proto}://{host}{prefix}"
    query = request.query_string.decode("latin-1")
    return f"{base}{request.path}" + (f"?{query}" if query else "")


def _first(value: str | None) -> str:
    return (value or "").split(",")[0].strip()


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str = ""


class NonceCache:
    """Nonces seen in the last ``window_s`` seconds (per process): a repeat is a replay."""

    def __init__(self, window_s: float, max_entries: int = 100_000) -> None:
        self._window = window_s
        self._max = max_entries
        self._seen: dict[str, float] = {}
        self._inserts = 0
        self._lock = threading.Lock()

    def seen_before(self, nonce: str, now: float | None = None) -> bool:
        if self._window <= 0:
            return False
        t = time.monotonic() if now is None else now
        with self._lock:
            expiry = self._seen.get(nonce)
            if expiry is not None and expiry > t:
                return True
            self._inserts += 1
            if len(self._seen) >= self._max or self._inserts % 1024 == 0:
                self._seen = {n: exp for n, exp in self._seen.items() if exp > t}
            if len(self._seen) < self._max:  # full of live nonces: fail open, not with an error
                self._seen[nonce] = t + self._window
            return False


def verify(request: Request, auth_token: str, public_base_url: str, nonces: NonceCache) -> Verdict:
    signature = request.headers.get(SIGNATURE_HEADER, "")
    nonce = request.headers.get(NONCE_HEADER, "")
    if not signature or not nonce:
        return Verdict(False, "missing signature headers")
    method = request.method.upper()
    if method not in ("GET", "POST"):
        return Verdict(False, f"method {method} not signed by Plivo")
    url = public_url(request, public_base_url)
    params = request.form.to_dict(flat=False) if method == "POST" else None
    try:
        valid = validate_v3_signature(method, url, nonce, auth_token, signature, params)
    except Exception as exc:  # the SDK's argument validators raise on odd URLs/values
        return Verdict(False, f"signature check failed: {type(exc).__name__}")
    if not valid:
        return Verdict(False, "signature mismatch")
    # Checked after the signature, so a forger cannot burn a genuine request's nonce.
    if nonces.seen_before(nonce):
        return Verdict(False, "replayed nonce")
    return Verdict(True)
