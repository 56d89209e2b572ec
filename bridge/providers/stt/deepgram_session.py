"""The socket-session lifecycle both Deepgram streams share (v1 live, v2 Flux).

One read loop owns the socket: when it ends (drop, stall, close frame) the socket is reopened
and the audio not yet covered by a final is replayed, so the caller's words survive; a close
1008 (undecodable audio) or too many failed reconnects fail the transcript stream with a
ProviderError. Each subclass keeps its own message handling (``_read``), what a new socket is
owed (``_resume``) and how an idle socket is kept open (``_keep_alive``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Generic, Protocol, TypeVar

from deepgram import DeepgramClientEnvironment
from websockets.exceptions import ConnectionClosed

from bridge.providers.base import ProviderError, Transcript
from bridge.providers.stt.deepgram_errors import close_details, connect_error
from bridge.providers.stt.deepgram_replay import ReplayBuffer

log = logging.getLogger(__name__)

PRODUCTION_URL = "wss://api.deepgram.com"
CLOSE_WAIT_S = 1.0  # CloseStream -> Metadata -> close normally takes one round trip


def environment(url: str) -> DeepgramClientEnvironment:
    """An SDK environment for ``url`` (http(s):// or ws(s)://; empty: production)."""
    url = (url or PRODUCTION_URL).rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in {"http", "https", "ws", "wss"}:
        raise ValueError(f"stt.deepgram_url must be http(s):// or ws(s)://, got {url!r}")
    secure = scheme in {"https", "wss"}
    http = f"{'https' if secure else 'http'}://{rest}"
    ws = f"{'wss' if secure else 'ws'}://{rest}"
    return DeepgramClientEnvironment(base=http, production=ws, agent=ws, agent_rest=http)


T = TypeVar("T")


async def open_socket(
    name: str, stack: contextlib.AsyncExitStack, connect: AbstractAsyncContextManager[T], timeout_s: float
) -> T:
    """Open one live socket inside ``stack``; ProviderError (never the SDK's) on failure."""
    try:
        async with asyncio.timeout(timeout_s):
            conn = await stack.enter_async_context(connect)
    except Exception as exc:
        error = connect_error(exc)  # the SDK error's text holds the key: never format it
        raise ProviderError(name, str(error).split(": ", 1)[-1], retryable=error.retryable) from None
    # The legacy websockets protocol waits 10 s for a close handshake by default; a dead
    # peer must not hold a call's teardown that long.
    ws = getattr(conn, "_websocket", None)
    if ws is not None and hasattr(ws, "close_timeout"):
        ws.close_timeout = CLOSE_WAIT_S
    return conn


class Socket(Protocol):
    """What the session itself sends on either SDK socket client."""

    async def send_media(self, message: bytes) -> None: ...
    async def send_close_stream(self) -> None: ...


ConnT = TypeVar("ConnT", bound=Socket)
ConnT_co = TypeVar("ConnT_co", bound=Socket, covariant=True)


class Connector(Protocol[ConnT_co]):
    """The provider object a session opens its sockets with."""

    keepalive_s: float
    max_reconnects: int

    async def connect(self, stack: contextlib.AsyncExitStack) -> ConnT_co: ...


class DeepgramSession(Generic[ConnT]):
    """One caller's socket session; subclasses implement base.SttStream's send/finalize."""

    name = "deepgram"
    refused_hint = ""  # appended to the close-1008 error: what the operator should check

    def __init__(self, stt: Connector[ConnT], bytes_per_sample: int) -> None:
        self._connector = stt
        self._replay = ReplayBuffer(8000, bytes_per_sample)
        self._carry = b""  # an odd byte waits for its other half
        self._queue: asyncio.Queue[Transcript | ProviderError | None] = asyncio.Queue()
        self._lock = asyncio.Lock()  # orders audio vs. replay on a new socket
        self._conn: ConnT | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._last_audio = time.monotonic()
        self._failed: ProviderError | None = None
        self._refused: ProviderError | None = None  # closed with a code no reconnect can fix
        self._got_result = False  # the current socket delivered a result: the retry budget resets
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self.reconnects = 0

    async def start(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        self._conn = await self._connector.connect(self._stack)
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._keepalive())]

    # ---- SttStream --------------------------------------------------------------------

    async def transcripts(self) -> AsyncIterator[Transcript]:
        while (item := await self._queue.get()) is not None:
            if isinstance(item, ProviderError):
                raise item
            yield item

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.send_close_stream()
        run = self._tasks[0] if self._tasks else None
        if run is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(run), CLOSE_WAIT_S)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._disconnect()
        self._queue.put_nowait(None)

    # ---- for the subclasses -----------------------------------------------------------

    def _even(self, pcm: bytes) -> bytes:
        """The whole 16-bit samples of the carried byte plus ``pcm``; an odd byte waits."""
        data = self._carry + pcm
        usable = len(data) & ~1
        self._carry = data[usable:]
        return data[:usable]

    async def _send_audio(self, audio: bytes) -> bool:
        """Keep ``audio`` for replay and send it; False when it did not go out now (no socket:
        the replay on the next one sends it; a dead one: the read loop notices)."""
        async with self._lock:
            self._replay.append(audio)
            conn = self._conn
            if conn is None:
                return False
            try:
                await conn.send_media(audio)
            except Exception:
                sent = False
            else:
                sent = True
        self._last_audio = time.monotonic()
        return sent

    async def _read(self, conn: ConnT) -> str:
        """Consume messages until the socket ends; returns why it ended."""
        raise NotImplementedError

    async def _resume(self, conn: ConnT, replay: bytes) -> None:
        """Send a new socket what the lost one was owed (under the audio lock)."""
        raise NotImplementedError

    def _resumed(self, replay: bytes) -> None:
        """After a reconnect hands over the socket (outside the lock)."""

    async def _keep_alive(self) -> None:
        """Keep the socket open while no audio flowed for ``keepalive_s``."""
        raise NotImplementedError

    def _fail(self, error: ProviderError) -> None:
        self._failed = error
        self._queue.put_nowait(error)

    # ---- lifecycle --------------------------------------------------------------------

    async def _run(self) -> None:
        """Read loop with reconnect; the only task that replaces the socket."""
        failures = 0
        while True:
            reason = await self._read_socket()
            if self._closing:
                return
            await self._disconnect()
            if self._refused is not None:
                self._fail(self._refused)
                return
            # a socket that produced results earns back the whole retry budget
            failures = 1 if self._got_result else failures + 1
            log.warning(
                "%s socket lost (%s); reconnect %d/%d",
                self.name, reason, failures, self._connector.max_reconnects,
            )
            if failures > self._connector.max_reconnects:
                lost = f"socket lost ({reason}) after {failures - 1} reconnects"
                self._fail(ProviderError(self.name, lost))
                return
            try:
                await self._reconnect()
            except ProviderError as exc:
                self._fail(exc)
                return
            self.reconnects += 1

    async def _read_socket(self) -> str:
        conn = self._conn
        if conn is None:
            return "not connected"
        self._got_result = False
        try:
            return await self._read(conn)
        except ConnectionClosed as exc:
            code, reason = close_details(exc)
            if code == 1008:
                # DATA-0000: the audio cannot be decoded; replaying it cannot help
                self._refused = ProviderError(
                    self.name, f"audio refused (close 1008 {reason}){self.refused_hint}", retryable=False
                )
            return f"closed {code} {reason}".strip()
        except Exception as exc:  # the socket is gone
            return type(exc).__name__

    async def _reconnect(self) -> None:
        stack = contextlib.AsyncExitStack()
        conn = await self._connector.connect(stack)
        try:
            await self._lock.acquire()
        except BaseException:  # cancelled (close) before the socket was handed over
            await stack.aclose()
            raise
        try:
            self._stack = stack
            replay = self._replay.reconnected()
            try:
                await self._resume(conn, replay)
            except Exception as exc:  # the new socket died under the replay: the read loop
                # notices it and opens another (an escaping error ended that loop: no socket
                # ever again, the caller's words lost with no error)
                log.warning("%s replay on the new socket failed (%s)", self.name, type(exc).__name__)
            finally:
                self._conn = conn
        finally:
            self._lock.release()
        self._resumed(replay)

    async def _disconnect(self) -> None:
        async with self._lock:
            self._conn = None
            stack, self._stack = self._stack, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    async def _keepalive(self) -> None:
        interval = self._connector.keepalive_s
        while True:
            await asyncio.sleep(interval / 2)
            if time.monotonic() - self._last_audio >= interval:
                await self._keep_alive()
