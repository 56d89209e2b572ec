"""ElevenLabs TTS over the stream-input WebSocket: text is sent as the LLM produces it, audio
comes back while later clauses are still being written (the lowest-latency path).

The async SDK does not expose this socket, so a small client on ``websockets`` speaks it
(DESIGN.md, Wire notes: Cloud providers). One socket serves one utterance (the server closes after isFinal);
spare sockets are kept open (``keep_warm``) so a turn skips the TCP/TLS/WebSocket handshake.
One client serves every call of the process: a reply that finds no spare while another reply
is under way and a spare on its way (replies overlapping faster than a handshake, common at
100+ calls) opens its socket while the caller waits and grows the pool by one, up to
``max_spares`` (bench/profiles/latency_150.md).

Timeouts: the engine times the first audio and the stalls (DESIGN.md, Turn contract). The
client keeps one loose backstop, ``read_timeout_s``: for the first audio after the first text,
and once the text has ended for each further message. While the LLM is still writing, silence
from the server is expected and not timed (the LLM has its own limit).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from bridge.providers.base import AudioChunk, ProviderError, backstop_s
from bridge.providers.tts.elevenlabs_audio import NativeAudio, check_output_format
from bridge.providers.tts.elevenlabs_connect import CLOSE_TIMEOUT_S, open_socket, socket_settings, socket_url
from bridge.settings import Secrets, Settings

log = logging.getLogger(__name__)

NAME = "elevenlabs-ws"
INACTIVITY_TIMEOUT_S = 60  # asked of the server for spare sockets (its default is 20 s)
SPARE_MAX_AGE_S = 50.0  # a spare older than this may be closed by the server: open a new one
MAX_SPARES = 16  # idle sockets held at most (each one is an open connection to the service)


class ElevenLabsWsTTS:
    name = NAME

    def __init__(
        self,
        *,
        api_key: str,
        voice_id: str,
        url: str = "",
        model_id: str = "eleven_flash_v2_5",
        output_format: str = "ulaw_8000",
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = backstop_s(2.0),
        keep_warm: bool = True,
        chunk_length_schedule: tuple[int, ...] = (50,),
        max_spares: int = MAX_SPARES,
    ) -> None:
        check_output_format(output_format)
        self._api_key = api_key
        self.output_format = output_format
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.keep_warm = keep_warm
        self.chunk_length_schedule = list(chunk_length_schedule)
        self._url, self._proxy = socket_url(url, voice_id, "stream-input", model_id=model_id,
                                            output_format=output_format,
                                            inactivity_timeout_s=INACTIVITY_TIMEOUT_S)
        # open spare sockets, oldest first, with the time each was opened
        self._spares: deque[tuple[ClientConnection, float]] = deque()
        self._refills: set[asyncio.Task[None]] = set()
        self._closing: set[asyncio.Task[None]] = set()  # stale spares being closed
        self._want = 1  # spares to keep: one more each time a reply found none, up to max_spares
        self.max_spares = max(1, max_spares)
        self._closed = False
        self._active = 0  # replies under way (their socket taken or being opened)
        # Replies that found no spare while a spare's handshake was under way, waiting for it
        # as well as for their own (whichever opens first serves the reply; the other joins
        # the pool), oldest first
        self._waiters: deque[asyncio.Future[ClientConnection]] = deque()
        self._adopting = 0  # such own handshakes still under way, bound for the pool
        self._owns: set[asyncio.Task[ClientConnection]] = set()  # those handshakes (aclose ends them)
        self.takes = 0  # replies started
        self.misses = 0  # of them, replies that found no spare and connected on the turn's path
        self.refill_hits = 0  # of the misses, replies served by the spare's handshake under way

    async def warmup(self) -> None:
        """Have a fresh spare socket open now (ProviderError if the service is unreachable).
        Spares the next turn would throw away (closed, or too old) are replaced."""
        self._drop_stale()
        if not self._spares:
            ws = await self._connect()
            if not self._spares and not self._closed:
                self._spares.append((ws, time.monotonic()))
            else:  # a refill got there first, or the provider was closed meanwhile
                await ws.close()

    def _drop_stale(self) -> None:
        """Set aside the spares a turn could not use (closed by the server, or too old). Their
        close handshakes run in the background: after an idle spell every spare of the pool
        is stale, and a reply must not wait for each one's close (up to CLOSE_TIMEOUT_S)."""
        now = time.monotonic()
        fresh: deque[tuple[ClientConnection, float]] = deque()
        stale: list[ClientConnection] = []
        for ws, opened in self._spares:  # one pass: each spare is judged once
            if ws.state is State.OPEN and now - opened < SPARE_MAX_AGE_S:
                fresh.append((ws, opened))
            else:
                stale.append(ws)
        if not stale:
            return
        self._spares = fresh
        # a spare that aged out was not needed: the pool shrinks back as the load goes down
        self._want = max(1, self._want - len(stale))
        self._close_later(stale)

    def _close_later(self, sockets: list[ClientConnection]) -> None:
        """Close in the background, the task kept (aclose waits for it, bounded)."""
        task = asyncio.get_running_loop().create_task(_close_all(sockets))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _connect(self) -> ClientConnection:
        return await open_socket(NAME, self._url, self._api_key, self.connect_timeout_s, self._proxy)

    async def _take(self) -> ClientConnection:
        self.takes += 1
        self._drop_stale()
        if self._spares:
            ws = self._spares.popleft()[0]
        else:
            if self.keep_warm:
                self.misses += 1
                if self._refills and self._active > 1:
                    # another reply is under way and the spare it started is not there yet:
                    # replies overlap faster than a handshake, keep one more (not on a cold
                    # start, nothing on its way, nor a call's own reply started over)
                    self._want = min(self.max_spares, self._want + 1)
            in_flight = bool(self._refills)
            self._start_refills()  # before the handshake below: the next reply may come meanwhile
            ws = await (self._first_socket() if in_flight else self._connect())
        self._start_refills()
        return ws

    async def _first_socket(self) -> ClientConnection:
        """No spare, but one's handshake is under way (begun before this reply, so likely done
        sooner than a fresh one: a reply started over at once, replies overlapping). Wait for
        both, bounded by our own handshake; the first to open serves this reply, the other
        goes to the pool (the refill would open one more for it anyway)."""
        waiter: asyncio.Future[ClientConnection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        own = asyncio.ensure_future(self._connect())
        self._owns.add(own)
        own.add_done_callback(self._owns.discard)
        self._adopting += 1  # bound for the pool unless it serves this reply: no refill for it
        try:
            await asyncio.wait({waiter, own}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled (barge-in): whatever opens goes to the pool
            self._leave(waiter, keep=True)
            own.add_done_callback(self._adopt_later)
            raise
        self._leave(waiter)
        if waiter.done() and not waiter.cancelled():
            own.add_done_callback(self._adopt_later)
            self.refill_hits += 1
            return waiter.result()
        if own.done() and not own.cancelled() and not self._closed:
            self._adopting -= 1
            return own.result()  # ProviderError if our handshake failed
        # the wait ended on the waiter cancelled, not on a socket: the client was closed
        # (aclose), which ends this handshake too (and closes what it opened)
        own.add_done_callback(self._adopt_later)
        raise ProviderError(NAME, "client closed while the reply waited for a socket")

    def _leave(self, waiter: asyncio.Future[ClientConnection], *, keep: bool = False) -> None:
        """Stop waiting; with ``keep`` (the reply is gone), a socket handed over is pooled."""
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        if not waiter.done():
            waiter.cancel()
        elif keep:
            self._adopt(waiter)

    def _adopt_later(self, task: asyncio.Future[ClientConnection]) -> None:
        self._adopting -= 1
        self._adopt(task)

    def _adopt(self, task: asyncio.Future[ClientConnection]) -> None:
        """A socket no reply took: to a waiting reply, else to the pool."""
        if task.cancelled() or task.exception() is not None:
            return
        ws = task.result()
        if not self._closed and self._hand_over(ws):
            return
        if self._closed or len(self._spares) >= self.max_spares:
            self._close_later([ws])
            return
        self._spares.append((ws, time.monotonic()))

    def _hand_over(self, ws: ClientConnection) -> bool:
        """Give a just-opened socket to the oldest reply waiting for one, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(ws)
                return True
        return False

    def _start_refills(self) -> None:
        """Open spares in the background, one handshake at a time (as many at once would be a
        burst of CPU on the loop every call shares), until the pool holds as many as wanted."""
        if not self.keep_warm or self._closed or self._refills:
            return
        if len(self._spares) < self._want:
            task = asyncio.get_running_loop().create_task(self._refill_spares())
            self._refills.add(task)
            task.add_done_callback(self._refills.discard)

    async def _refill_spares(self) -> None:
        # a reply's own handshake that lost its race is bound for the pool too
        while not self._closed and len(self._spares) + self._adopting < self._want:
            try:
                ws = await self._connect()
            except ProviderError as exc:
                log.warning("elevenlabs-ws: spare socket not opened: %s", exc)
                return
            if self._hand_over(ws):  # a reply is waiting for it: it replaces no spare
                continue
            if self._closed or len(self._spares) >= self.max_spares:
                await ws.close()
                return
            self._spares.append((ws, time.monotonic()))

    async def synthesize(self, text: AsyncIterator[str]) -> AsyncGenerator[AudioChunk, None]:
        self._active += 1
        counted = True
        try:
            ws = await self._take()
            session = _Session(self, ws, text)
            try:
                async for chunk in session.run():
                    yield chunk
            finally:
                # no longer under way once cut: a reply started over meanwhile (preemption)
                # must not count this one while its socket closes
                self._active -= 1
                counted = False
                await session.stop()
        finally:
            if counted:
                self._active -= 1

    async def aclose(self) -> None:
        self._closed = True
        for waiter in self._waiters:
            waiter.cancel()
        self._waiters.clear()
        refills = list(self._refills)
        for task in refills:
            task.cancel()
        await asyncio.gather(*refills, return_exceptions=True)
        # replies' own handshakes still under way: ended (a cancelled handshake aborts its
        # connection); one that opened meanwhile is closed here, not left to nobody
        owns = list(self._owns)
        for own in owns:
            own.cancel()
        for opened in await asyncio.gather(*owns, return_exceptions=True):
            if isinstance(opened, ClientConnection):
                await opened.close()
        spares, self._spares = self._spares, deque()
        for ws, _ in spares:
            await ws.close()
        closing = list(self._closing)
        if closing:  # each close is bounded by close_timeout; a stuck one is not waited for
            _done, stuck = await asyncio.wait(closing, timeout=2 * CLOSE_TIMEOUT_S)
            for task in stuck:
                task.cancel()


async def _close_all(sockets: list[ClientConnection]) -> None:
    # together: each close waits up to close_timeout for a server that may be gone
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


class _Session:
    """One utterance on one socket: a sender task feeds text, the receiver task queues audio."""

    def __init__(self, tts: ElevenLabsWsTTS, ws: ClientConnection, text: AsyncIterator[str]) -> None:
        self.tts = tts
        self.ws = ws
        self.text = text
        self.native = NativeAudio(tts.output_format)
        self.out: asyncio.Queue[AudioChunk | BaseException | None] = asyncio.Queue()
        self.timer: asyncio.Timeout | None = None
        # The backstop is a deadline checked when a timer fires, not a timer moved per message
        # (asyncio's Timeout.reschedule made and cancelled a TimerHandle for every audio message)
        self.deadline: float | None = None
        self.check: asyncio.TimerHandle | None = None
        self.awaiting_first = False  # text sent, no audio yet
        self.got_audio = False
        self.ended = False  # the end-of-input message was sent
        self.tasks: list[asyncio.Task[None]] = []

    async def run(self) -> AsyncIterator[AudioChunk]:
        self.tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._send())]
        while (item := await self.out.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    async def stop(self) -> None:
        """Normal end, failure or barge-in: stop both tasks and close the socket."""
        for task in self.tasks:
            task.cancel()
        if self.check is not None:
            self.check.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.ws.close()

    def _deadline(self, seconds: float | None) -> None:
        """The receiver fails unless a message arrives within ``seconds`` (None: not timed)."""
        if seconds is None:
            self.deadline = None
            return
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + seconds
        if self.check is None or self.check.when() > self.deadline:
            if self.check is not None:
                self.check.cancel()
            self.check = loop.call_at(self.deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self.check = None
        if self.deadline is None or self.timer is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= self.deadline:
            self.timer.reschedule(loop.time())  # the receiver's timeout raises TimeoutError
        else:  # a message moved the deadline: look again then
            self.check = loop.call_at(self.deadline, self._check_deadline)

    async def _send(self) -> None:
        try:
            await self.ws.send(
                json.dumps(
                    {
                        "text": " ",
                        "generation_config": {"chunk_length_schedule": self.tts.chunk_length_schedule},
                    }
                )
            )
            async for clause in self.text:
                if not clause.strip():
                    continue
                # flush: each clause from the engine is a complete unit; speak it now
                await self.ws.send(json.dumps({"text": clause.strip() + " ", "flush": True}))
                if not self.awaiting_first and not self.got_audio:
                    self.awaiting_first = True
                    self._deadline(self.tts.read_timeout_s)
            await self.ws.send(json.dumps({"text": ""}))
            self.ended = True
            if not self.awaiting_first:
                self._deadline(self.tts.read_timeout_s)
        except ConnectionClosed:
            pass  # the receiver reports it
        except Exception as exc:  # the text source failed (e.g. the LLM): hand it over unchanged
            self.out.put_nowait(exc)

    async def _receive(self) -> None:
        try:
            async with asyncio.timeout(None) as timer:
                self.timer = timer
                async for raw in self.ws:
                    message: dict[str, Any] = json.loads(raw)
                    if message.get("error") or (message.get("message") and "audio" not in message):
                        raise ProviderError(NAME, f"server error ({message.get('error') or 'unknown'})")
                    if message.get("audio"):
                        chunk = self.native.chunk(base64.b64decode(message["audio"]))
                        self.got_audio = True
                        self.awaiting_first = False
                        self._deadline(self.tts.read_timeout_s if self.ended else None)
                        if chunk is not None:
                            self.out.put_nowait(chunk)
                    if message.get("isFinal"):
                        self.out.put_nowait(None)
                        return
            raise ProviderError(NAME, "socket closed before the end of the audio")
        except TimeoutError:
            what = "first audio" if self.awaiting_first else "audio (stalled)"
            self.out.put_nowait(ProviderError(NAME, f"no {what} within {self.tts.read_timeout_s:g} s"))
        except ConnectionClosed as exc:
            self.out.put_nowait(
                ProviderError(NAME, f"socket dropped ({exc.rcvd.code if exc.rcvd else 1006})")
            )
        except ProviderError as exc:
            self.out.put_nowait(exc)
        except ValueError as exc:  # bad JSON or base64
            self.out.put_nowait(ProviderError(NAME, f"bad message: {exc}"))
        finally:
            self.timer = None  # its context is over: a check firing now has nothing to end
            if self.check is not None:
                self.check.cancel()
                self.check = None


def create(settings: Settings, secrets: Secrets) -> ElevenLabsWsTTS:
    try:
        return ElevenLabsWsTTS(**socket_settings(settings, secrets))
    except ValueError as exc:
        raise ProviderError(NAME, str(exc), retryable=False) from None
