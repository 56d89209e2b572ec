"""Shared by both ElevenLabs providers: URLs and error mapping (never quoting key material)."""

from __future__ import annotations

import json
from typing import Any

from bridge.providers.base import ProviderError

PRODUCTION_URL = "https://api.elevenlabs.io"


def http_url(url: str) -> str:
    url = (url or PRODUCTION_URL).rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in {"http", "https", "ws", "wss"}:
        raise ValueError(f"tts.elevenlabs_url must be http(s):// or ws(s)://, got {url!r}")
    return f"{'https' if scheme in {'https', 'wss'} else 'http'}://{rest}"


def ws_url(url: str) -> str:
    base = http_url(url)
    return "ws" + base[len("http") :]


def detail_status(body: Any) -> str:
    """ElevenLabs' machine-readable reason, ``{"detail": {"status": ...}}``, from an error body
    (a parsed dict, or the raw bytes of a refused WebSocket handshake); "" if there is none."""
    if isinstance(body, bytes | bytearray | str):
        try:
            body = json.loads(body or b"null")
        except ValueError:
            return ""
    detail = body.get("detail") if isinstance(body, dict) else None
    status = detail.get("status") if isinstance(detail, dict) else None
    return status if isinstance(status, str) else ""


def status_error(name: str, status: int, detail: str = "") -> ProviderError:
    # the same HTTP status means different things: a 401 is also "out of credits"
    if detail == "quota_exceeded":
        return ProviderError(
            name, f"quota exceeded (HTTP {status}): the ElevenLabs account has no credits left",
            retryable=False,
        )
    if detail == "output_format_not_allowed":
        return ProviderError(
            name, f"output format not allowed on this ElevenLabs plan (HTTP {status}): "
            "use tts.output_format = ulaw_8000", retryable=False,
        )
    if status in (401, 403):
        return ProviderError(
            name, f"authentication rejected (HTTP {status}): check ELEVENLABS_API_KEY", retryable=False
        )
    if status in (400, 404, 422):
        return ProviderError(
            name,
            f"request rejected (HTTP {status}): check voice_id, model_id, output_format",
            retryable=False,
        )
    return ProviderError(name, f"service unavailable (HTTP {status})", retryable=True)


# error values of a WebSocket error frame that are refusals of the account, not the moment
_ACCOUNT_ERRORS = {
    "quota_exceeded": (401, "quota_exceeded"),
    "invalid_api_key": (401, ""),
    "unauthorized": (401, ""),
    "output_format_not_allowed": (403, "output_format_not_allowed"),
}


def frame_error(name: str, error: str) -> ProviderError:
    """The ProviderError for a WebSocket error frame ``{"message", "error", "code": 1008}``:
    an account refusal is fatal as at the handshake, anything else retryable."""
    refusal = _ACCOUNT_ERRORS.get(error)
    if refusal is not None:
        return status_error(name, refusal[0], refusal[1])
    return ProviderError(name, f"server error ({error})")
