"""Deepgram live STT on deepgram-sdk 7.x (``listen.v1.connect``).

Caller audio goes out as mu-law 8 kHz (the call's own codec, so nothing is lost or resampled)
with interim results, endpointing, utterance-end and VAD events on. ``finalize()`` sends
Finalize for a fast end of turn. While no audio flows (e.g. the engine pauses) KeepAlive keeps
the socket. A dropped or stalled socket is reopened and the audio not yet covered by a final
result is replayed, so the caller's words survive; after ``max_reconnects`` failures the
transcript stream raises ProviderError and the engine fails over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from deepgram.listen.v1.socket_client import AsyncV1SocketClient
from deepgram.listen.v1.types import ListenV1Error, ListenV1Results, ListenV1UtteranceEnd
from websockets.exceptions import ConnectionClosed

from bridge.audio.g711 import pcm_to_ulaw
from bridge.providers.base import ProviderError, Transcript
from bridge.providers.stt.deepgram_errors import NAME, close_details, connect_error
from bridge.providers.stt.deepgram_replay import ReplayBuffer
from bridge.settings import Secrets, Settings

log = logging.getLogger(__name__)

PRODUCTION_URL = "wss://api.deepgram.com"
CLOSE_WAIT_S = 1.0  # CloseStream -> Metadata -> close normally takes one round trip
# Deepgram answers audio with Results about once per second of audio; a few frames of audio
# (the silence after a final, when the caller then goes quiet) are owed no reply at all.
REPLY_OWED_AFTER_S = 1.0
# Deepgram does not promise a from_finalize reply "if there is no significant amount of audio
# data to process" (developers.deepgram.com/docs/finalize). With less unfinalized audio than
# this, finalize() answers itself instead of waiting for a reply that may never come.
FINALIZE_MIN_PENDING_S = 0.25


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


class DeepgramSTT:
    name = NAME

    def __init__(
        self,
        *,
        api_key: str,
        url: str = "",
        model: str = "nova-3",
        language: str = "en-US",
        encoding: str = "mulaw",
        endpointing_ms: int = 300,
        utterance_end_ms: int = 1000,
        connect_timeout_s: float = 3.0,
        stall_timeout_s: float = 6.0,
        keepalive_s: float = 4.0,
        max_reconnects: int = 2,
    ) -> None:
        if encoding not in {"mulaw", "linear16"}:
            raise ValueError(f"unsupported Deepgram encoding {encoding!r}")
        self._client = AsyncDeepgramClient(api_key=api_key, environment=environment(url))
        self.encoding = encoding
        self.options: dict[str, Any] = {
            "model": model,
            "language": language,
            "encoding": encoding,
            "sample_rate": 8000,
            "channels": 1,
            "interim_results": True,
            "endpointing": endpointing_ms,
            "utterance_end_ms": utterance_end_ms,
            "vad_events": True,
            "smart_format": True,
            "punctuate": True,
        }
        self.connect_timeout_s = connect_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.keepalive_s = keepalive_s
        self.max_reconnects = max_reconnects

    async def open(self) -> DeepgramStream:
        stream = DeepgramStream(self)
        await stream.start()
        return stream

    async def connect(self, stack: contextlib.AsyncExitStack) -> AsyncV1SocketClient:
        """Open one live socket inside ``stack``; ProviderError (never the SDK's) on failure."""
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                conn = await stack.enter_async_context(self._client.listen.v1.connect(**self.options))
        except Exception as exc:
            raise connect_error(exc) from None  # the SDK error's text holds the key
        # The legacy websockets protocol waits 10 s for a close handshake by default; a dead
        # peer must not hold a call's teardown that long.
        ws = getattr(conn, "_websocket", None)
        if ws is not None and hasattr(ws, "close_timeout"):
            ws.close_timeout = CLOSE_WAIT_S
        return conn


class DeepgramStream:
    """One caller's live transcription (implements base.SttStream)."""

    def __init__(self, stt: DeepgramSTT) -> None:
        self._stt = stt
        mulaw = stt.encoding == "mulaw"
        self._replay = ReplayBuffer(8000, 1 if mulaw else 2)
        self._encode = pcm_to_ulaw if mulaw else bytes
        self._carry = b""  # an odd byte waits for its other half
        self._queue: asyncio.Queue[Transcript | ProviderError | None] = asyncio.Queue()
        self._lock = asyncio.Lock()  # orders audio vs. replay on a new socket
        self._conn: AsyncV1SocketClient | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._watch: asyncio.Timeout | None = None  # stall watchdog of the current read loop
        self._last_audio = time.monotonic()
        self._utterance_open = False  # finals with words since the last end of utterance
        self._finalize_owed = 0  # Finalize messages whose reply (an end of utterance) is expected
        self._answered_locally = 0  # Finalize messages answered here; a late reply is not an end
        self._failed: ProviderError | None = None
        self._refused: ProviderError | None = None  # closed with a code no reconnect can fix
        self._got_result = False  # the current socket delivered at least one Results
        self._reply_due = False  # a reply is owed: enough audio since the last message
        self._unanswered = 0  # audio bytes sent since the last message received
        self._reply_after = int(REPLY_OWED_AFTER_S * 8000) * (1 if mulaw else 2)
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
        if not usable:
            return
        audio = self._encode(data[:usable])
        async with self._lock:
            self._replay.append(audio)
            conn = self._conn
            if conn is None:
                return  # reconnecting: the replay sends it
            try:
                await conn.send_media(audio)
            except Exception:
                return  # the read loop sees the dead socket and reconnects; audio is in the replay
        self._last_audio = time.monotonic()
        self._unanswered += len(audio)
        if self._unanswered >= self._reply_after:
            self._arm()

    async def finalize(self) -> None:
        """Exactly one end-of-utterance transcript follows each call: Deepgram's from_finalize
        reply, or, when too little audio is pending for Deepgram to owe one, our own. The stall
        watchdog is not armed: an unanswered Finalize is normal, not a dead socket."""
        if self._failed is not None:
            raise self._failed
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.send_finalize()
        if self._replay.pending_s < FINALIZE_MIN_PENDING_S and not self._finalize_owed:
            self._answered_locally += 1
            self._utterance_open = False
            self._queue.put_nowait(Transcript("", True, True, 0.0))
        else:
            self._finalize_owed += 1

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

    def _arm(self) -> None:
        """A second of audio went out: some message must come back within the stall timeout."""
        self._reply_due = True
        watch = self._watch
        if watch is not None and watch.when() is None:
            watch.reschedule(asyncio.get_running_loop().time() + self._stt.stall_timeout_s)

    async def _run(self) -> None:
        """Read loop with reconnect; the only task that replaces the socket."""
        failures = 0
        while True:
            reason = await self._read()
            if self._closing:
                return
            if self._refused is not None:
                await self._disconnect()
                self._fail(self._refused)
                return
            # a socket that produced results earns back the whole retry budget
            failures = 1 if self._got_result else failures + 1
            log.warning(
                "deepgram socket lost (%s); reconnect %d/%d", reason, failures, self._stt.max_reconnects
            )
            await self._disconnect()
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
        """Consume messages until the socket ends; returns why it ended."""
        conn = self._conn
        if conn is None:
            return "not connected"
        self._got_result = False
        try:
            async with asyncio.timeout(None) as watch:
                self._watch = watch
                if self._reply_due:  # audio went out before this loop started
                    self._arm()
                while True:
                    message = await conn.recv()
                    self._reply_due = False
                    self._unanswered = 0
                    watch.reschedule(None)
                    if isinstance(message, ListenV1Error):
                        return "error message from Deepgram"
                    self._handle(message)
        except TimeoutError:
            return f"no reply for {self._stt.stall_timeout_s:g} s"
        except ConnectionClosed as exc:
            code, reason = close_details(exc)
            if code == 1008:
                # DATA-0000: the audio cannot be decoded; replaying it cannot help
                self._refused = ProviderError(
                    NAME, f"audio refused (close 1008 {reason}): check stt.deepgram_encoding",
                    retryable=False,
                )
            return f"closed {code} {reason}".strip()
        except Exception as exc:  # the socket is gone
            return type(exc).__name__
        finally:
            self._watch = None

    def _handle(self, message: Any) -> None:
        if isinstance(message, ListenV1Results):
            self._got_result = True
            alts = message.channel.alternatives
            text = alts[0].transcript.strip() if alts else ""
            confidence = float(alts[0].confidence) if alts else 0.0
            is_final = bool(message.is_final)
            end = is_final and bool(message.speech_final or message.from_finalize)
            if is_final:
                self._replay.finalized(message.start, message.duration)
                self._utterance_open = self._utterance_open or bool(text)
            if end and message.from_finalize and not self._finalize_owed and self._answered_locally:
                self._answered_locally -= 1  # that Finalize was answered here already
                end = False
            elif end and not text and not message.from_finalize and not self._utterance_open:
                # an empty speech_final (noise, or the gap before the words' final) with no
                # words pending ends nothing: "yes" would otherwise be cut off
                end = False
            if text or end:
                self._queue.put_nowait(Transcript(text, is_final, end, confidence))
            if end:
                self._utterance_open = False
                self._finalize_owed = max(0, self._finalize_owed - 1)
        elif isinstance(message, ListenV1UtteranceEnd) and self._utterance_open:
            # words were finalized but no speech_final came (noise): this closes the turn
            self._utterance_open = False
            self._queue.put_nowait(Transcript("", True, True, 0.0))

    async def _reconnect(self) -> None:
        stack = contextlib.AsyncExitStack()
        conn = await self._stt.connect(stack)
        try:
            await self._lock.acquire()
        except BaseException:  # cancelled (close) before the socket was handed over
            await stack.aclose()
            raise
        try:
            self._stack = stack
            replay = self._replay.reconnected()
            try:
                if replay:
                    await conn.send_media(replay)
                if self._finalize_owed:
                    await conn.send_finalize()  # the lost socket's Finalize, for the same audio
            finally:
                self._conn = conn  # even if the replay failed: the read loop will notice
        finally:
            self._lock.release()
        if replay:
            self._last_audio = time.monotonic()
            self._unanswered = len(replay)
            self._reply_due = self._unanswered >= self._reply_after

    async def _disconnect(self) -> None:
        async with self._lock:
            self._conn = None
            stack, self._stack = self._stack, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    async def _keepalive(self) -> None:
        interval = self._stt.keepalive_s
        while True:
            await asyncio.sleep(interval / 2)
            conn = self._conn
            if conn is not None and time.monotonic() - self._last_audio >= interval:
                with contextlib.suppress(Exception):
                    await conn.send_keep_alive()
                    self._last_audio = time.monotonic()

    def _fail(self, error: ProviderError) -> None:
        self._failed = error
        self._queue.put_nowait(error)


def create(settings: Settings, secrets: Secrets) -> DeepgramSTT:
    s = settings.stt
    return DeepgramSTT(
        api_key=secrets.require("deepgram_api_key"),
        url=s.deepgram_url,
        model=s.deepgram_model,
        language=s.language,
        encoding=s.deepgram_encoding,
        endpointing_ms=s.deepgram_endpointing_ms,
        utterance_end_ms=s.deepgram_utterance_end_ms,
        connect_timeout_s=s.connect_timeout_s,
        stall_timeout_s=s.stall_timeout_s,
        keepalive_s=s.deepgram_keepalive_s,
        max_reconnects=s.max_reconnects,
    )
