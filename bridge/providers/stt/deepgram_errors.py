"""Deepgram failures -> ProviderError, without ever formatting the SDK's exception: its
ApiError.__str__ prints the request headers, which hold ``Authorization: Token <key>``."""

from __future__ import annotations

import asyncio

from bridge.providers.base import ProviderError

NAME = "deepgram"


def status_error(status: int) -> ProviderError:
    if status in (401, 403):
        return ProviderError(
            NAME, f"authentication rejected (HTTP {status}): check DEEPGRAM_API_KEY", retryable=False
        )
    if status in (400, 404, 422):
        return ProviderError(
            NAME, f"request rejected (HTTP {status}): check the stt settings", retryable=False
        )
    return ProviderError(NAME, f"service unavailable (HTTP {status})", retryable=True)


def connect_error(exc: BaseException) -> ProviderError:
    """Map an exception from opening the live socket (the SDK's ApiError, or websockets'
    InvalidStatus for the socket deepgram_live.py opens). Callers raise it ``from None``."""
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)  # InvalidStatus: the handshake's HTTP answer
    if status is None and response is not None:
        status = getattr(response, "status_code", None)
    if isinstance(status, int):
        error = status_error(status)
        reason = _dg_error(response)
        if reason and not error.retryable:
            # Deepgram's own word for a refused request (e.g. "No such model/language/tier
            # combination found."): the operator's clue; it never holds the key
            error = ProviderError(NAME, f"{str(error).split(': ', 1)[-1]}: {reason}", retryable=False)
        return error
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return ProviderError(NAME, "connect timed out", retryable=True)
    if isinstance(exc, OSError):
        return ProviderError(NAME, f"connect failed ({type(exc).__name__})", retryable=True)
    return ProviderError(NAME, f"connect failed ({type(exc).__name__})", retryable=True)


def _dg_error(response: object) -> str:
    headers = getattr(response, "headers", None)
    value = headers.get("dg-error", "") if headers is not None else ""
    return str(value)[:120]


def close_details(exc: BaseException) -> tuple[int | None, str]:
    """(code, reason) of a WebSocket close frame Deepgram sent, e.g. (1011, "NET-0001") for
    the 10 s idle close or (1008, "DATA-0000") for undecodable audio."""
    rcvd = getattr(exc, "rcvd", None)
    if rcvd is None:
        return None, ""
    return getattr(rcvd, "code", None), str(getattr(rcvd, "reason", ""))[:60]
