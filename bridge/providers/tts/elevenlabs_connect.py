"""The WebSocket handshake of both ElevenLabs socket providers (stream-input and multi-context),
with its failures mapped to ProviderError as the HTTP provider maps its statuses."""

from __future__ import annotations

import urllib.parse
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.proxy import get_proxy
from websockets.uri import parse_uri

from bridge.providers.base import ProviderError, backstop_s
from bridge.providers.tts.elevenlabs_common import detail_status, status_error, ws_url
from bridge.settings import Secrets, Settings

CLOSE_TIMEOUT_S = 0.5
MAX_MESSAGE_BYTES = 2**23


def socket_url(base: str, voice_id: str, endpoint: str, *, model_id: str, output_format: str,
               inactivity_timeout_s: int) -> tuple[str, Any]:
    """The socket's URL (``endpoint``: stream-input or multi-stream-input) and the proxy
    websockets would pick for it from the environment (its default, proxy=True), looked up once
    here: per connect the lookup walked os.environ twice, ~10 % of the stream-input client's CPU
    (profiled)."""
    query = urllib.parse.urlencode(
        {"model_id": model_id, "output_format": output_format, "inactivity_timeout": inactivity_timeout_s}
    )
    url = f"{ws_url(base)}/v1/text-to-speech/{urllib.parse.quote(voice_id, safe='')}/{endpoint}?{query}"
    return url, get_proxy(parse_uri(url))


def socket_settings(settings: Settings, secrets: Secrets) -> dict[str, Any]:
    """The constructor arguments both socket providers take from the settings."""
    s = settings.tts
    return {
        "api_key": secrets.require("elevenlabs_api_key"),
        "voice_id": s.voice_id,
        "url": s.elevenlabs_url,
        "model_id": s.model_id,
        "output_format": s.output_format,
        "connect_timeout_s": s.connect_timeout_s,
        "read_timeout_s": backstop_s(s.first_byte_timeout_s, s.stall_timeout_s),
        "keep_warm": s.elevenlabs_keep_warm,
    }


async def open_socket(name: str, url: str, api_key: str, timeout_s: float, proxy: Any) -> ClientConnection:
    """An open socket to ``url`` (``proxy``: looked up once by the caller, see elevenlabs_ws.py)."""
    try:
        return await connect(
            url,
            additional_headers={"xi-api-key": api_key},
            open_timeout=timeout_s,
            close_timeout=CLOSE_TIMEOUT_S,
            max_size=MAX_MESSAGE_BYTES,
            compression=None,
            proxy=proxy,
        )
    except InvalidStatus as exc:
        raise status_error(name, exc.response.status_code, detail_status(exc.response.body)) from None
    except TimeoutError:
        raise ProviderError(name, f"connect timed out after {timeout_s:g} s") from None
    except (OSError, WebSocketException) as exc:
        raise ProviderError(name, f"connect failed ({type(exc).__name__})") from None
