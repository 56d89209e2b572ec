"""Deepgram's live sockets (``/v1/listen``, and Flux's ``/v2/listen``), opened by us rather
than by the SDK's connect.

Why not ``AsyncDeepgramClient.listen.v1.connect``: in deepgram-sdk 7.x it opens the socket with
the legacy ``websockets`` client and its defaults, so permessage-deflate is negotiated and every
20 ms audio frame is run through zlib (2.2 % of the daemon's time at 60 calls, profiled), and
each message received is parsed into a pydantic model. Audio does not deflate and the few
fields we read are plain JSON. So the socket is the new ``websockets`` client with
``compression=None``, the query is built as the SDK builds it (lower-case booleans; pinned by
a test against the SDK's own encoder), the Authorization header is Deepgram's documented
``Token <key>``, and messages come back as dicts. The control messages are Deepgram's
documented JSON: Finalize, CloseStream, KeepAlive (v1); ForceEndTurn, CloseStream (v2), each
the bytes the SDK's own send methods put on the wire (``json.dumps`` of ``{"type": ...}``).
Flux (``listen.v2.connect``) has the same legacy client, deflate and per-message pydantic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect

PATH = "/v1/listen"
FLUX_PATH = "/v2/listen"
USER_AGENT = "voice-bridge (deepgram live)"
MAX_MESSAGE_BYTES = 1 << 20  # a Results message is a few kB; Deepgram sends no audio back
# websockets logs the handshake's headers at DEBUG, Authorization included: never below INFO
_WS_LOG = logging.getLogger(__name__ + ".websocket")
_WS_LOG.setLevel(logging.INFO)
_FINALIZE = json.dumps({"type": "Finalize"})
_CLOSE_STREAM = json.dumps({"type": "CloseStream"})
_KEEP_ALIVE = json.dumps({"type": "KeepAlive"})
_FORCE_END_TURN = json.dumps({"type": "ForceEndTurn"})


def query_string(options: dict[str, Any]) -> str:
    """The listen options as the SDK sends them: booleans as ``true``/``false``, None left out."""
    pairs = [(k, ("true" if v else "false") if isinstance(v, bool) else str(v))
             for k, v in options.items() if v is not None]
    return urlencode(pairs)


class LiveSocket:
    """What the session sends and reads on one live socket."""

    def __init__(self, ws: ClientConnection) -> None:
        self.websocket = ws

    async def send_media(self, audio: bytes) -> None:
        await self.websocket.send(audio)

    async def send_finalize(self) -> None:
        await self.websocket.send(_FINALIZE)

    async def send_close_stream(self) -> None:
        await self.websocket.send(_CLOSE_STREAM)

    async def send_keep_alive(self) -> None:
        await self.websocket.send(_KEEP_ALIVE)

    async def send_force_end_turn(self) -> None:
        await self.websocket.send(_FORCE_END_TURN)

    async def ping(self) -> asyncio.Future[float]:
        """A WebSocket Ping; the future completes when its Pong comes (RFC 6455: any server
        answers, after reading everything sent before it), or fails if the socket closes."""
        return asyncio.ensure_future(await self.websocket.ping())

    def abort(self) -> None:
        """Drop the TCP connection at once (a dead path: no close handshake to wait for)."""
        self.websocket.transport.abort()

    async def recv(self) -> dict[str, Any]:
        """The next message as a dict; ``{}`` for anything that is not a JSON object (Deepgram
        sends none: the caller skips it rather than failing the call)."""
        raw = await self.websocket.recv()
        try:
            message = json.loads(raw)
        except ValueError:
            return {}
        return message if isinstance(message, dict) else {}


@contextlib.asynccontextmanager
async def live_socket(
    ws_base: str, options: dict[str, Any], api_key: str, close_timeout_s: float, path: str = PATH,
    ping_interval_s: float | None = 20.0, ping_timeout_s: float | None = 20.0,
) -> AsyncIterator[LiveSocket]:
    """Open ``<ws_base><path>?<options>`` (v1 by default, FLUX_PATH for Flux); closed (close
    frame, bounded wait) on exit. Handshake failures raise websockets' InvalidStatus
    (deepgram_errors maps it). Keepalive pings every ``ping_interval_s``; a Pong missing for
    ``ping_timeout_s`` closes the socket (1011), which the session's read loop sees."""
    url = f"{ws_base.rstrip('/')}{path}?{query_string(options)}"
    async with connect(
        url,
        additional_headers={"Authorization": f"Token {api_key}"},
        user_agent_header=USER_AGENT,
        compression=None,  # audio does not deflate: zlib per 20 ms frame was pure cost
        proxy=None,  # as the SDK's client: no proxy lookup (it scans the environment per connect)
        max_size=MAX_MESSAGE_BYTES,
        open_timeout=None,  # the caller bounds the whole open (connect_timeout_s)
        close_timeout=close_timeout_s,
        ping_interval=ping_interval_s,
        ping_timeout=ping_timeout_s,
        logger=_WS_LOG,
    ) as ws:
        yield LiveSocket(ws)
