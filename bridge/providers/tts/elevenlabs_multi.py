"""ElevenLabs TTS over the multi-context WebSocket (``/v1/text-to-speech/{voice}/multi-stream-input``):
text is sent as the LLM writes it, as with stream-input (elevenlabs_ws.py), but one socket
carries several replies at once, each in a context of its own, and stays open after a reply
(stream-input serves one utterance per socket). A reply therefore takes a free slot on a socket
already open instead of a TCP/TLS/WebSocket handshake of its own (issue 13: at 150 calls the
spare stream-input sockets could not keep up, bench/profiles/latency_150.md).

The pool: one client per process keeps a few sockets; each reply gets a fresh context id on
the oldest socket with a free slot (at most ``slots`` live contexts a socket, under the
service's 5; a context closed but whose isFinal has not come yet still counts: the livekit and
pipecat bug). When fewer than ``headroom`` (4) slots are free a socket is opened in the background;
a reply that finds none free waits for that handshake (or its own), a "miss". A socket idle for
IDLE_RETIRE_S (the server closes it after the INACTIVITY_TIMEOUT_S we ask for) is closed and,
with ``keep_warm``, replaced.

A reply: the context is initialised (``{"text": " ", "context_id", "generation_config"}``) just
before its first clause (a reply cut before any text opens no context at all), each
clause is sent with ``flush`` (as elevenlabs_ws does), then ``close_context``: the flushed audio
still comes, then ``isFinal`` for the context. A reply cut early (barge-in) sends close_context
and leaves; its audio is dropped and the socket stays open for the next reply.

Timeouts as in elevenlabs_ws.py: the engine times the first audio and the stalls; the client's
backstop ``read_timeout_s`` covers the first audio after the first clause, and each further
message once the text has ended. While the LLM writes, the server's silence is not timed, and
no keep-alive is needed: the socket's inactivity timeout (180 s asked) is far above the LLM's.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

from websockets.asyncio.client import ClientConnection

from bridge.providers.base import AudioChunk, ProviderError, backstop_s
from bridge.providers.tts.elevenlabs_audio import NativeAudio, check_output_format
from bridge.providers.tts.elevenlabs_connect import CLOSE_TIMEOUT_S, open_socket, socket_settings, socket_url
from bridge.providers.tts.elevenlabs_multi_socket import NAME, Context, MultiSocket, fresh
from bridge.settings import Secrets, Settings

log = logging.getLogger(__name__)

SLOTS = 4  # live contexts per socket; the service refuses a 6th (max_active_conversations)
# free slots kept open: below this a socket is opened in the background. A socket's worth: at
# 150 calls on a busy box with 2 (half a socket) 5-20 % of the replies still came while the
# background handshake was under way (bench/stream_capacity.py, 2026-12-02)
HEADROOM = 4
INACTIVITY_TIMEOUT_S = 180  # asked of the server (its default is 20 s; 180 is the maximum)
IDLE_RETIRE_S = 150.0  # a socket we sent nothing on for this long is closed, not used
ABANDON_GRACE_S = 10.0  # a closed context whose isFinal is this late: the socket is retired


class _Pending:
    """A handshake under way, and the slots promised to the replies waiting for it."""

    task: asyncio.Task[MultiSocket]  # set right after construction

    def __init__(self) -> None:
        self.reserved = 0


class ElevenLabsMultiTTS:
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
        slots: int = SLOTS,
        headroom: int = HEADROOM,
    ) -> None:
        check_output_format(output_format)
        if not 1 <= slots <= 5:
            raise ValueError("slots must be 1..5 (the service allows 5 contexts a socket)")
        self._api_key = api_key
        self.output_format = output_format
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.keep_warm = keep_warm
        self.chunk_length_schedule = list(chunk_length_schedule)
        self.slots = slots
        self.headroom = headroom if keep_warm else 0
        self._url, self._proxy = socket_url(url, voice_id, "multi-stream-input", model_id=model_id,
                                            output_format=output_format,
                                            inactivity_timeout_s=INACTIVITY_TIMEOUT_S)
        self._sockets: list[MultiSocket] = []  # open sockets, oldest first
        self._pending: list[_Pending] = []  # handshakes under way
        self._closing: set[asyncio.Task[None]] = set()  # sockets being closed
        self._sends: set[asyncio.Task[None]] = set()  # close_context of replies cut short
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]  # context ids unique across processes too
        self._closed = False
        self.takes = 0  # replies started
        self.misses = 0  # of them, replies that found no free slot and waited for a handshake
        self.opened = 0  # sockets opened

    # -- the pool ---------------------------------------------------------------------------

    async def warmup(self) -> None:
        """Have a socket open now (ProviderError if the service is unreachable)."""
        self._check_open()
        self._prune()
        if any(s.open for s in self._sockets):
            self._top_up()
            return
        pending = self._pending[0] if self._pending else self._start_connect()
        await self._wait(pending)

    def _check_open(self) -> None:
        if self._closed:  # a socket opened now would never be closed
            raise ProviderError(NAME, "client closed", retryable=False)

    def _prune(self) -> None:
        """Drop the sockets that ended; close the idle ones and the ones to retire."""
        now = time.monotonic()
        keep: list[MultiSocket] = []
        done: list[MultiSocket] = []
        for sock in self._sockets:
            if sock.open and not sock.contexts and not sock.reserved and now - sock.last_sent > IDLE_RETIRE_S:
                sock.retiring = True  # the server may close it any moment now
            if sock.open and sock.closed_before(now - ABANDON_GRACE_S):
                sock.retiring = True  # a close the server never confirmed: do not count on its slots
            if sock.open or (sock.retiring and sock.active and sock.failed is None):
                keep.append(sock)
            else:
                done.append(sock)
        self._sockets = keep
        if done:
            self._close_later(done)

    def _close_later(self, sockets: list[MultiSocket]) -> None:
        task = asyncio.get_running_loop().create_task(_close_all(sockets))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _free_socket(self) -> MultiSocket | None:
        for sock in self._sockets:
            if sock.open and sock.used < self.slots:
                return sock
        return None

    def _top_up(self) -> None:
        """Open a socket in the background when fewer than ``headroom`` slots are free."""
        if self._closed or not self.keep_warm:
            return
        free = sum(self.slots - s.used for s in self._sockets if s.open)
        free += sum(self.slots - p.reserved for p in self._pending)
        if free < self.headroom:
            self._start_connect()

    def _start_connect(self) -> _Pending:
        pending = _Pending()
        pending.task = asyncio.get_running_loop().create_task(self._open_socket(pending))
        self._pending.append(pending)
        pending.task.add_done_callback(lambda task: self._opened(pending))
        return pending

    async def _open_socket(self, pending: _Pending) -> MultiSocket:
        """The handshake; its socket joins the pool before the task ends, so a finished task
        always means an updated pool (a done-callback runs a loop pass later: a reply taking
        a slot in between would see the old accounting and leak its reservation)."""
        ws = await self._connect()
        self.opened += 1
        sock = MultiSocket(ws)
        self._pending.remove(pending)
        if self._closed:
            self._close_later([sock])
            raise ProviderError(NAME, "client closed", retryable=False)
        sock.reserved = pending.reserved  # the slots promised meanwhile move with it
        self._sockets.append(sock)
        return sock

    def _opened(self, pending: _Pending) -> None:
        """A handshake ended: a failed one is forgotten (a successful one already joined)."""
        if pending in self._pending:
            self._pending.remove(pending)
        task = pending.task
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not pending.reserved:  # nobody waits to hear of it
            log.warning("%s: socket not opened: %s", NAME, exc)

    async def _wait(self, pending: _Pending) -> MultiSocket:
        """The socket of a handshake (shared: a reply cut meanwhile does not cancel it)."""
        try:
            return await asyncio.shield(pending.task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if pending.task.cancelled() and (current is None or not current.cancelling()):
                raise ProviderError(NAME, "client closed while the reply waited for a socket") from None
            raise

    async def _connect(self) -> ClientConnection:
        return await open_socket(NAME, self._url, self._api_key, self.connect_timeout_s, self._proxy)

    async def _take(self, cid: str) -> tuple[MultiSocket, Context]:
        """A slot for a new context: on an open socket, else on one being opened."""
        self._check_open()
        self.takes += 1
        self._prune()
        sock = self._free_socket()
        if sock is None:
            self.misses += 1
            # never a finished handshake: its socket (if any) is already in the pool
            pending = next(
                (p for p in self._pending if p.reserved < self.slots and not p.task.done()), None
            )
            if pending is None:
                pending = self._start_connect()
            pending.reserved += 1
            try:
                sock = await self._wait(pending)
            except BaseException:
                # the reservation is given back where it lives now: on the pending until the
                # socket joined the pool (synchronously with the handshake's end), then on it
                if pending.task.done() and not pending.task.cancelled() and not pending.task.exception():
                    pending.task.result().reserved -= 1
                else:
                    pending.reserved -= 1
                raise
            sock.reserved -= 1  # the socket joined the pool carrying this reply's reservation
            if sock.failed is not None:
                raise fresh(sock.failed)
        ctx = sock.add(cid)
        self._top_up()
        return sock, ctx

    def _after(self, sock: MultiSocket) -> None:
        """A reply ended: a retiring socket nobody reads any more is closed."""
        if sock.retiring and not sock.active and sock in self._sockets:
            self._sockets.remove(sock)
            self._close_later([sock])

    # -- replies ----------------------------------------------------------------------------

    async def synthesize(self, text: AsyncIterator[str]) -> AsyncGenerator[AudioChunk, None]:
        sock, ctx = await self._take(f"{self._prefix}-{next(self._ids)}")
        reply = _Reply(self, sock, ctx, text)
        try:
            async for chunk in reply.run():
                yield chunk
        finally:
            try:
                await reply.stop()
            finally:
                self._after(sock)

    async def aclose(self) -> None:
        self._closed = True
        handshakes = [p.task for p in self._pending]
        for handshake in handshakes:
            handshake.cancel()
        for opened in await asyncio.gather(*handshakes, return_exceptions=True):
            if isinstance(opened, MultiSocket):
                await opened.close()
        sockets, self._sockets = self._sockets, []
        await _close_all(sockets)
        for send in list(self._sends):
            send.cancel()
        closing = list(self._closing)
        if closing:  # each close is bounded by close_timeout; a stuck one is not waited for
            _done, stuck = await asyncio.wait(closing, timeout=2 * CLOSE_TIMEOUT_S)
            for task in stuck:
                task.cancel()


async def _close_all(sockets: list[MultiSocket]) -> None:
    # together: each close waits up to close_timeout for a server that may be gone
    await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)


class _Reply:
    """One reply on one context: a sender task feeds the text; the socket's reader fills the
    context's queue; this generator yields it."""

    def __init__(self, tts: ElevenLabsMultiTTS, sock: MultiSocket, ctx: Context, text: AsyncIterator[str]):
        self.tts = tts
        self.sock = sock
        self.ctx = ctx
        self.text = text
        self.native = NativeAudio(tts.output_format)
        self.sender: asyncio.Task[None] | None = None  # feeds the text
        # the backstop: a deadline looked at when a timer fires, not a timer moved per message
        self.deadline: float | None = None
        self.check: asyncio.TimerHandle | None = None
        self.awaiting_first = False  # text sent, no audio yet
        self.got_audio = False
        self.ended = False  # close_context sent: the rest of the audio, then isFinal
        self.finished = False  # isFinal received
        self.started = False  # the context's opening message was sent (just before its first clause)

    async def run(self) -> AsyncIterator[AudioChunk]:
        self.sender = asyncio.create_task(self._send())
        queue = self.ctx.queue
        while True:
            item = await queue.get()
            if isinstance(item, bytes):
                self.got_audio = True
                self.awaiting_first = False
                self._deadline(self.tts.read_timeout_s if self.ended else None)
                chunk = self.native.chunk(item)
                if chunk is not None:
                    yield chunk
            elif item is None:
                self.finished = True
                if not self.ended:  # e.g. the server's inactivity timeout closed the context
                    raise ProviderError(NAME, "context closed by the server before the end of the text")
                return
            else:
                raise item

    async def stop(self) -> None:
        """Normal end, failure or barge-in: stop sending; a context still live is closed and
        abandoned (its audio dropped); the socket stays open for other replies."""
        if self.check is not None:
            self.check.cancel()
            self.check = None
        self.deadline = None
        if self.sender is not None:
            self.sender.cancel()  # it sends nothing after this, not even at its next step
        ctx = self.ctx
        if not self.finished:
            # before any await: a second cancellation of the consumer must not leave the
            # context live and read by nobody (its slot would never free)
            ctx.abandoned = True
            if not self.started:  # cut before its first clause: the server never heard of it
                self._drop()
            elif self.sock.contexts.get(ctx.cid) is ctx and ctx.closed_at is None:
                ctx.closed_at = time.monotonic()
                self.sock.send_soon({"context_id": ctx.cid, "close_context": True}, self.tts._sends)
        if self.sender is not None:
            await asyncio.gather(self.sender, return_exceptions=True)

    def _deadline(self, seconds: float | None) -> None:
        """The reply fails unless a message arrives within ``seconds`` (None: not timed)."""
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
        if self.deadline is None or self.finished:
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= self.deadline:
            what = "first audio" if self.awaiting_first else "audio (stalled)"
            error = ProviderError(NAME, f"no {what} within {self.tts.read_timeout_s:g} s")
            self.ctx.queue.put_nowait(error)
        else:  # a message moved the deadline: look again then
            self.check = loop.call_at(self.deadline, self._check_deadline)

    async def _send(self) -> None:
        cid = self.ctx.cid
        try:
            async for clause in self.text:
                if not clause.strip():
                    continue
                if self.sock.contexts.get(cid) is not self.ctx:
                    return  # the server ended the context: more text would open a new one
                if not self.started:
                    # opened just before its first clause (back to back): a reply cut before any
                    # text never opens a context (whether the service confirms the close of an
                    # empty context is undocumented; an unconfirmed one would pin a slot)
                    self.started = True
                    await self._out(
                        {
                            "text": " ",
                            "context_id": cid,
                            "generation_config": {"chunk_length_schedule": self.tts.chunk_length_schedule},
                        }
                    )
                # flush: each clause from the engine is a complete unit; speak it now
                await self._out({"text": clause.strip() + " ", "context_id": cid, "flush": True})
                if not self.awaiting_first and not self.got_audio:
                    self.awaiting_first = True
                    self._deadline(self.tts.read_timeout_s)
            if self.sock.contexts.get(cid) is not self.ctx:
                return
            self.ended = True
            if not self.started:  # no text at all: nothing was opened, nothing to close
                self._drop()
                self.ctx.queue.put_nowait(None)
                return
            # before the send: its isFinal may be read while this task waits on the send
            self.ctx.closed_at = time.monotonic()
            await self._out({"context_id": cid, "close_context": True})
            if not self.awaiting_first:
                self._deadline(self.tts.read_timeout_s)
        except _SocketGone:
            pass  # its reader fails this context
        except Exception as exc:  # the text source failed (e.g. the LLM, a ProviderError too):
            self.ctx.queue.put_nowait(exc)  # hand it over unchanged; stop() closes the context

    def _drop(self) -> None:
        """Forget a context the server never heard of (its slot frees at once)."""
        if self.sock.contexts.get(self.ctx.cid) is self.ctx:
            del self.sock.contexts[self.ctx.cid]

    async def _out(self, message: dict[str, object]) -> None:
        """A send whose failure (the socket is gone) is told apart from the text source's."""
        try:
            await self.sock.send(message)
        except ProviderError:
            raise _SocketGone from None


class _SocketGone(Exception):
    """The socket failed under a send: its reader reports it to every live context."""


def create(settings: Settings, secrets: Secrets) -> ElevenLabsMultiTTS:
    try:
        return ElevenLabsMultiTTS(**socket_settings(settings, secrets))
    except ValueError as exc:
        raise ProviderError(NAME, str(exc), retryable=False) from None
