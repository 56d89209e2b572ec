"""Deepgram Flux STT on deepgram-sdk 7.x (``listen.v2.connect``): speech recognition that
detects the end of the caller's turn itself.

Flux's TurnInfo events become Transcripts: Update / StartOfTurn are interims (the turn's
cumulative transcript), EndOfTurn is the final and the end of the utterance (so the engine
ends the turn on it), EagerEndOfTurn and TurnResumed are interims carrying ``event``
(base.EAGER_END_OF_TURN / TURN_RESUMED) for an engine that prepares its reply early.
``finalize()`` sends ForceEndTurn; as with v1's Finalize, exactly one end of utterance follows
each call (our own when no turn is open, since no reply is promised then). v2 has no
KeepAlive message: while no audio flows, mu-law silence keeps the socket open. A dropped socket
is reopened and the audio since the last EndOfTurn replayed; an ``Error`` message or a close
1008 fails the stream at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from deepgram import AsyncDeepgramClient
from deepgram.listen.v2.socket_client import AsyncV2SocketClient
from deepgram.listen.v2.types import ListenV2FatalError, ListenV2TurnInfo
from websockets.exceptions import ConnectionClosed

from bridge.audio.g711 import pcm_to_ulaw
from bridge.providers.base import EAGER_END_OF_TURN, TURN_RESUMED, ProviderError, Transcript
from bridge.providers.stt.deepgram_errors import close_details, connect_error
from bridge.providers.stt.deepgram_replay import ReplayBuffer
from bridge.providers.stt.deepgram_stt import CLOSE_WAIT_S, environment
from bridge.settings import Secrets, Settings

log = logging.getLogger(__name__)

NAME = "deepgram-flux"
SILENCE_FRAME = b"\xff" * 160  # 20 ms of mu-law silence
EVENTS = {"EagerEndOfTurn": EAGER_END_OF_TURN, "TurnResumed": TURN_RESUMED}


class FluxSTT:
    name = NAME

    def __init__(
        self,
        *,
        api_key: str,
        url: str = "",
        model: str = "flux-general-en",
        eot_threshold: float | None = None,
        eager_eot_threshold: float | None = None,
        eot_timeout_ms: int = 5000,
        connect_timeout_s: float = 3.0,
        keepalive_s: float = 4.0,
        max_reconnects: int = 2,
    ) -> None:
        self._client = AsyncDeepgramClient(api_key=api_key, environment=environment(url))
        self.options: dict[str, Any] = {
            "model": model,
            "encoding": "mulaw",
            "sample_rate": 8000,
            "eot_timeout_ms": eot_timeout_ms,
        }
        if eot_threshold is not None:
            self.options["eot_threshold"] = eot_threshold
        if eager_eot_threshold is not None:  # turns on EagerEndOfTurn / TurnResumed
            self.options["eager_eot_threshold"] = eager_eot_threshold
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.max_reconnects = max_reconnects

    async def open(self) -> FluxStream:
        stream = FluxStream(self)
        await stream.start()
        return stream

    async def connect(self, stack: contextlib.AsyncExitStack) -> AsyncV2SocketClient:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                conn = await stack.enter_async_context(self._client.listen.v2.connect(**self.options))
        except Exception as exc:
            raise _named(connect_error(exc)) from None  # the SDK error's text holds the key
        ws = getattr(conn, "_websocket", None)
        if ws is not None and hasattr(ws, "close_timeout"):
            ws.close_timeout = CLOSE_WAIT_S
        return conn


def _named(error: ProviderError) -> ProviderError:
    text = str(error).split(": ", 1)[-1]
    return ProviderError(NAME, text, retryable=error.retryable)


class FluxStream:
    """One caller's Flux session (implements base.SttStream)."""

    def __init__(self, stt: FluxSTT) -> None:
        self._stt = stt
        self._replay = ReplayBuffer(8000, 1)
        self._carry = b""
        self._queue: asyncio.Queue[Transcript | ProviderError | None] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._conn: AsyncV2SocketClient | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._last_audio = time.monotonic()
        self._turn_open = False
        self._force_owed = 0  # ForceEndTurn sent while a turn was open: its EndOfTurn is due
        self._failed: ProviderError | None = None
        self._refused: ProviderError | None = None
        self._got_turn = False
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self.reconnects = 0

    async def start(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        self._conn = await self._stt.connect(self._stack)
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._keepalive())]

    # ---- SttStream --------------------------------------------------------------------

    async def send(self, pcm: bytes) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closing:
            return
        data = self._carry + pcm
        usable = len(data) & ~1
        self._carry = data[usable:]
        if usable:
            await self._send_audio(pcm_to_ulaw(data[:usable]))

    async def finalize(self) -> None:
        """ForceEndTurn; exactly one end of utterance follows (ours if no turn is open)."""
        if self._failed is not None:
            raise self._failed
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.send_force_end_turn()
        if self._turn_open:
            self._force_owed += 1
        else:  # no turn: Flux owes no EndOfTurn (not promised), so answer here
            self._queue.put_nowait(Transcript("", True, True, 0.0))

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

    # ---- internals --------------------------------------------------------------------

    async def _send_audio(self, audio: bytes) -> None:
        async with self._lock:
            self._replay.append(audio)
            conn = self._conn
            if conn is None:
                return
            with contextlib.suppress(Exception):  # the read loop sees a dead socket
                await conn.send_media(audio)
        self._last_audio = time.monotonic()

    async def _run(self) -> None:
        failures = 0
        while True:
            reason = await self._read()
            if self._closing:
                return
            await self._disconnect()
            if self._refused is not None:
                self._fail(self._refused)
                return
            failures = 1 if self._got_turn else failures + 1
            log.warning("flux socket lost (%s); reconnect %d/%d", reason, failures, self._stt.max_reconnects)
            if failures > self._stt.max_reconnects:
                self._fail(ProviderError(NAME, f"socket lost ({reason}) after {failures - 1} reconnects"))
                return
            try:
                await self._reconnect()
            except ProviderError as exc:
                self._fail(exc)
                return
            self.reconnects += 1

    async def _read(self) -> str:
        conn = self._conn
        if conn is None:
            return "not connected"
        self._got_turn = False
        try:
            while True:
                message = await conn.recv()
                if isinstance(message, ListenV2FatalError):
                    self._refused = ProviderError(NAME, f"error {message.code}: {message.description[:80]}")
                    return "error message"
                if isinstance(message, ListenV2TurnInfo):
                    self._got_turn = True
                    self._handle(message)
        except ConnectionClosed as exc:
            code, reason = close_details(exc)
            if code == 1008:
                self._refused = ProviderError(NAME, f"audio refused (close 1008 {reason})", retryable=False)
            return f"closed {code} {reason}".strip()
        except Exception as exc:
            return type(exc).__name__

    def _handle(self, info: ListenV2TurnInfo) -> None:
        text = info.transcript.strip()
        event = str(info.event)
        if event == "EndOfTurn":
            self._turn_open = False
            self._replay.finalized(0.0, float(info.audio_window_end))
            if self._force_owed:
                self._force_owed -= 1
            self._queue.put_nowait(Transcript(text, True, True, float(info.end_of_turn_confidence)))
            return
        self._turn_open = True
        if event in EVENTS or text:
            self._queue.put_nowait(Transcript(text, False, False, 0.0, EVENTS.get(event, "")))

    async def _reconnect(self) -> None:
        stack = contextlib.AsyncExitStack()
        conn = await self._stt.connect(stack)
        async with self._lock:
            self._stack = stack
            replay = self._replay.reconnected()
            self._turn_open = False
            try:
                if replay:
                    await conn.send_media(replay)
                if self._force_owed:
                    await conn.send_force_end_turn()
            finally:
                self._conn = conn

    async def _disconnect(self) -> None:
        async with self._lock:
            self._conn = None
            stack, self._stack = self._stack, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    async def _keepalive(self) -> None:
        """No KeepAlive in v2: silence while the engine sends nothing (kept for replay too, so
        Flux's audio clock and the replay buffer stay aligned)."""
        interval = self._stt.keepalive_s
        while True:
            await asyncio.sleep(interval / 2)
            if time.monotonic() - self._last_audio >= interval:
                await self._send_audio(SILENCE_FRAME)

    def _fail(self, error: ProviderError) -> None:
        self._failed = error
        self._queue.put_nowait(error)


def create(settings: Settings, secrets: Secrets) -> FluxSTT:
    s = settings.stt
    return FluxSTT(
        api_key=secrets.require("deepgram_api_key"),
        url=s.deepgram_url,
        model=s.flux_model,
        eot_threshold=s.flux_eot_threshold,
        eager_eot_threshold=s.flux_eager_eot_threshold,
        eot_timeout_ms=s.flux_eot_timeout_ms,
        connect_timeout_s=s.connect_timeout_s,
        keepalive_s=s.deepgram_keepalive_s,
        max_reconnects=s.max_reconnects,
    )
