"""Shared by both ElevenLabs providers: URLs and error mapping (never quoting key material)."""

from __future__ import annotations

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


def status_error(name: str, status: int) -> ProviderError:
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
