"""The WebSocket handshake of both ElevenLabs socket providers (stream-input and multi-context),
with its failures mapped to ProviderError as the HTTP provider maps its statuses."""

from __future__ import annotations

from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from bridge.providers.base import ProviderError
from bridge.providers.tts.elevenlabs_common import detail_status, status_error

CLOSE_TIMEOUT_S = 0.5
MAX_MESSAGE_BYTES = 2**23


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
