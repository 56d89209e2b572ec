"""OpenAI's streamed chat completion sent and read on aiohttp: the request the SDK would send
(its URL, headers and JSON body), without the SDK's per-request machinery.

Why: measured with ``bench/provider_overhead.py --cpu`` (50 concurrent replies of 14 words),
the SDK path cost ~8 ms of CPU per reply, ~2 ms on aiohttp. The SDK's request build
(options, headers, the TypedDict transform of the top-level parameters) and httpx2/httpcore2's
pool (which walks every pooled connection, asking each socket through anyio whether it
expired, on every request and release: O(pool) per request at 150 calls) and its per-read
timeout objects were most of it. aiohttp parses HTTP in C and keeps its idle connections in
a per-host list.

What stays the SDK's: the ``AsyncOpenAI`` client is still built (and used as is when
``max_retries`` > 0: its retry policy), and this module takes from it, once, the URL
(``client.base_url``, which also honours ``OPENAI_BASE_URL``) and the headers
(``client.auth_headers`` + ``client.default_headers``: the Bearer key, ``OpenAI-Organization``/
``OpenAI-Project`` when set, the SDK's User-Agent and X-Stainless headers) plus the two it adds
per request (retry count 0, the read timeout). A test pins the method, URL, headers and JSON
body to the SDK's own request for the same parameters. Errors read as the SDK reads them: a
non-2xx status with the API's ``{"error": {...}}`` body, an in-stream ``data: {"error": ...}``
event, timeouts and dropped connections, each mapped to the same ProviderError text the SDK
path gives (openai_errors.py). SSE framing as in openai_sse.py (lines ending in LF or CRLF).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from openai import AsyncOpenAI

from bridge.providers.http_session import client_session, read_capped
from bridge.providers.llm.openai_errors import (
    NAME,
    connection_error,
    status_error,
    stream_error,
    timeout_error,
)
from bridge.providers.llm.sse import SseData

POOL_LIMIT = 1000  # the SDK's own max_connections (openai._constants.DEFAULT_CONNECTION_LIMITS)
KEEPALIVE_S = 5.0  # httpx's keepalive_expiry, which the SDK's pool uses
ERROR_BODY_MAX = 65536  # an error response is read this far for its "code"


def sdk_headers(client: AsyncOpenAI, read_timeout_s: float) -> dict[str, str]:
    """The headers the SDK sends with a first attempt (no retry) of a request."""
    headers = {**client.auth_headers, **client.default_headers}
    out = {k: v for k, v in headers.items() if isinstance(v, str)}  # Omit() leaves a header out
    out["x-stainless-retry-count"] = "0"
    out["x-stainless-read-timeout"] = str(read_timeout_s)
    return out


class ChatWire:
    """One aiohttp session (its connection pool) for every request of one OpenAIChat."""

    def __init__(self, client: AsyncOpenAI, *, connect_timeout_s: float, read_timeout_s: float) -> None:
        self._sdk = client
        self._url = str(client.base_url).rstrip("/") + "/chat/completions"
        self._models_url = str(client.base_url).rstrip("/") + "/models"
        self._read_timeout_s = read_timeout_s
        # sock_read: the SDK's read timeout, a backstop per read (the engine times first
        # token and stalls); sock_connect: its connect timeout
        self._timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout_s, sock_read=read_timeout_s)
        self._headers: dict[str, str] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._proxy: str | None = None

    def _open(self) -> aiohttp.ClientSession:
        # built on first use, inside the running loop (the SDK's X-Stainless-Async names it)
        self._headers = sdk_headers(self._sdk, self._read_timeout_s)
        # the proxy and TLS set up as the SDK's httpx2 client does (http_session.py)
        self._session, self._proxy = client_session(
            self._url, NAME, timeout=self._timeout, pool_limit=POOL_LIMIT, keepalive_s=KEEPALIVE_S
        )
        return self._session

    async def open(self, body: dict[str, Any]) -> WireChatStream:
        """POST the body; the response as a stream of chunk dicts, or ProviderError."""
        session = self._session or self._open()
        try:
            resp = await session.post(
                self._url, data=json.dumps(body).encode(), headers=self._headers, proxy=self._proxy
            )
        except TimeoutError:  # aiohttp's connect and read timeouts are TimeoutErrors
            raise timeout_error() from None
        except aiohttp.ClientError:
            raise connection_error() from None
        if resp.status >= 400:
            try:
                raw = await read_capped(resp, ERROR_BODY_MAX)
            except (TimeoutError, aiohttp.ClientError):
                raw = b""
            finally:
                resp.close()
            raise status_error(resp.status, _error_code(raw))
        return WireChatStream(resp)

    async def warm(self) -> None:
        """GET {base_url}/models (the SDK's ``models.list()``) on this session, so its pool
        holds an open connection to the API host for the next chat request; ProviderError."""
        session = self._session or self._open()
        try:
            # no redirects: one would take the key to another host
            async with session.get(
                self._models_url, headers=self._headers, proxy=self._proxy, allow_redirects=False
            ) as resp:
                raw = await resp.read()  # to its end: the connection goes back to the pool
                if resp.status >= 400:
                    raise status_error(resp.status, _error_code(raw))
        except TimeoutError:
            raise timeout_error() from None
        except aiohttp.ClientError:
            raise connection_error() from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _error_code(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return ""
    inner = body.get("error", body) if isinstance(body, dict) else None
    return str(inner.get("code") or "") if isinstance(inner, dict) else ""


class WireChatStream:
    """Chat-completion chunks as dicts, in order; ``close()`` ends the HTTP response now."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self._done = False
        self._sse = SseData(b"data:", b" ", b"\n")

    def __aiter__(self) -> WireChatStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._done:
            raise StopAsyncIteration
        try:
            data = await self._next_data()
            if data is not None and data.startswith(b"[DONE]"):
                await self._resp.read()  # the rest of the body: the connection goes back to the pool
                data = None
        except TimeoutError:
            raise timeout_error() from None
        except aiohttp.ClientError:
            raise connection_error() from None
        if data is None:
            self._done = True
            self._resp.release()
            raise StopAsyncIteration
        try:
            chunk = json.loads(data)
        except ValueError:
            raise stream_error() from None
        if not isinstance(chunk, dict) or chunk.get("error"):
            raise stream_error()
        return chunk

    async def _next_data(self) -> bytes | None:
        """The next event's data; None at the end."""
        sse = self._sse
        content = self._resp.content
        while line := await content.readline():
            data = sse.line(line.rstrip(b"\r\n"))
            if data is not None:
                return data
        return sse.end()

    async def close(self) -> None:
        if not self._done:
            self._done = True
            self._resp.close()  # mid-reply (barge-in, failure): the server sees the disconnect

