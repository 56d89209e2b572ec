"""OpenAI failures as ProviderErrors, the same text whether the SDK or openai_wire.py made
the request. Never quotes the server's message: OpenAI echoes part of a wrong key in its 401
text."""

from __future__ import annotations

import openai

from bridge.providers.base import ProviderError

NAME = "openai"
# the SDK's exception class per status (openai._client.AsyncOpenAI._make_status_error), named
# in the message so both paths read the same
_STATUS_CLASS = {
    400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError",
    404: "NotFoundError", 409: "ConflictError", 422: "UnprocessableEntityError", 429: "RateLimitError",
}


def status_class(status: int) -> str:
    return _STATUS_CLASS.get(status) or ("InternalServerError" if status >= 500 else "APIStatusError")


def status_error(status: int, code: str, class_name: str = "") -> ProviderError:
    """A refused request: HTTP ``status`` with the API's error ``code`` (or "")."""
    retryable = status in (408, 409, 429) or status >= 500
    hint = ": check OPENAI_API_KEY" if status in (401, 403) else ""
    if status == 429 and code == "insufficient_quota":
        # out of credit: no retry helps (the SDK's own retry logic agrees)
        return ProviderError(NAME, "HTTP 429: insufficient quota (check the OpenAI billing)", retryable=False)
    if status == 400:
        hint = ": the request was refused (check llm.model and its parameters)"
    name = class_name or status_class(status)
    return ProviderError(NAME, f"HTTP {status} ({name}){hint}", retryable=retryable)


def timeout_error() -> ProviderError:
    return ProviderError(NAME, "request timed out")


def connection_error() -> ProviderError:
    return ProviderError(NAME, "connection failed")


def stream_error(class_name: str = "APIError") -> ProviderError:
    """An in-stream error event, or a chunk that is not a JSON object (the SDK's APIError)."""
    return ProviderError(NAME, f"stream error ({class_name})")


def map_error(exc: BaseException) -> ProviderError:
    """SDK exception -> ProviderError."""
    if isinstance(exc, openai.APIStatusError):
        return status_error(exc.status_code, _error_code(exc), type(exc).__name__)
    if isinstance(exc, openai.APITimeoutError):
        return timeout_error()
    if isinstance(exc, openai.APIConnectionError):
        return connection_error()
    if isinstance(exc, openai.APIError):
        return stream_error(type(exc).__name__)
    return ProviderError(NAME, f"unexpected failure ({type(exc).__name__})")


def _error_code(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("code") or "")
    return ""
