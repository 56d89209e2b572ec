"""One multi-context WebSocket (/v1/text-to-speech/{voice}/multi-stream-input) shared by
several replies: one reader task demultiplexes the server's messages by ``contextId`` to each
reply's queue (DESIGN.md, Wire notes: Cloud providers).

A context counts against the server's limit (5 per socket, livekit/agents-js #1985) from its
first message until its ``isFinal`` arrives, also after we closed it: a reply cut by a barge-in
leaves its context here, abandoned (its audio dropped), until the server confirms the close.
When the socket ends (an error frame then close 1008, or dropped), every live context fails
with a ProviderError and the socket takes no more contexts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from bridge.providers.base import ProviderError
from bridge.providers.tts.elevenlabs_common import frame_error

log = logging.getLogger(__name__)

NAME = "elevenlabs-multi"
# Queue items: audio bytes, None for the context's isFinal, or the error that ended it
Item = bytes | BaseException | None


def fresh(error: ProviderError) -> ProviderError:
    """A copy of ``error`` for one more raise: one instance raised in many tasks would gather
    every task's traceback (frames and their locals) and a ``__context__`` from each."""
    copy = type(error).__new__(type(error), *error.args)
    copy.__dict__.update(error.__dict__)
    return copy


class Context:
    """A reply's view of its context: the audio queue the reader fills."""

    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.abandoned = False  # the reply is gone: its audio is dropped
        # close_context sent, isFinal awaited: when, or when audio last came after it (monotonic)
        self.closed_at: float | None = None


class MultiSocket:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.opened = time.monotonic()
        self.last_sent = self.opened  # the server's inactivity timeout counts from our messages
        self.contexts: dict[str, Context] = {}  # live: first message sent, isFinal not received
        self.reserved = 0  # slots promised to replies waiting for this socket's handshake
        self.failed: ProviderError | None = None
        self.retiring = False  # takes no new context; closed once its live contexts end
        self.closing = False  # close() called: we end it
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @property
    def open(self) -> bool:
        alive = self.ws.state is State.OPEN and not self.reader.done()
        return self.failed is None and not self.retiring and alive

    @property
    def used(self) -> int:
        return len(self.contexts) + self.reserved

    @property
    def active(self) -> int:
        """Live contexts a reply still reads (not abandoned)."""
        return sum(1 for c in self.contexts.values() if not c.abandoned)

    def closed_before(self, when: float) -> bool:
        """A context we closed before ``when`` is still waiting for its isFinal."""
        return any(c.closed_at is not None and c.closed_at < when for c in self.contexts.values())

    def add(self, cid: str) -> Context:
        ctx = Context(cid)
        self.contexts[cid] = ctx
        return ctx

    async def send(self, message: dict[str, Any]) -> None:
        """Send one message (ProviderError once the socket is gone)."""
        if self.failed is not None:
            raise fresh(self.failed)
        self.last_sent = time.monotonic()
        try:
            await self.ws.send(json.dumps(message))
        except ConnectionClosed as exc:
            raise self._dropped(exc) from None

    def send_soon(self, message: dict[str, Any], tasks: set[asyncio.Task[None]]) -> None:
        """Send from a task of its own (a reply being cancelled must not lose its close)."""
        task = asyncio.get_running_loop().create_task(self._send_quietly(message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _send_quietly(self, message: dict[str, Any]) -> None:
        try:
            await self.send(message)
        except ProviderError:
            pass  # the socket is gone: the reader fails its contexts

    async def _read(self) -> None:
        # A malformed frame fails the socket rather than being skipped: a server speaking a
        # shape we do not understand may also have sent the isFinal or audio we missed, and a
        # skipped isFinal would pin a slot; failing is bounded (every live reply gets a
        # retryable ProviderError now, the next reply opens a fresh socket).
        error: ProviderError
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                if not isinstance(message, dict):
                    raise ProviderError(NAME, f"bad message (JSON {type(message).__name__}, not an object)")
                if message.get("error") or (message.get("message") and "audio" not in message):
                    # the documented error frame; the server closes 1008 right after
                    raise frame_error(NAME, str(message.get("error") or "unknown"))
                cid = message.get("contextId", message.get("context_id"))
                ctx = self.contexts.get(cid) if isinstance(cid, str) else None
                if ctx is None or not isinstance(cid, str):
                    continue  # a context we no longer know: nothing is waiting for it
                audio = message.get("audio")
                if audio and not isinstance(audio, str):
                    raise ProviderError(NAME, f"bad message (audio is {type(audio).__name__})")
                if audio:
                    if ctx.closed_at is not None:  # its close is being honoured: not stuck
                        ctx.closed_at = time.monotonic()
                    if not ctx.abandoned:
                        ctx.queue.put_nowait(base64.b64decode(audio))
                if message.get("isFinal"):
                    del self.contexts[cid]
                    ctx.queue.put_nowait(None)
            error = ProviderError(NAME, f"socket closed by the {'client' if self.closing else 'server'}")
        except ConnectionClosed as exc:
            error = self._dropped(exc)
        except ProviderError as exc:
            error = exc
        except ValueError as exc:  # bad JSON or base64
            error = ProviderError(NAME, f"bad message: {exc}")
        except Exception as exc:  # any other shape we do not understand: never die silently
            log.exception("%s: reader failed", NAME)
            error = ProviderError(NAME, f"bad message ({type(exc).__name__})")
        self._fail(error)

    def _dropped(self, exc: ConnectionClosed) -> ProviderError:
        return ProviderError(NAME, f"socket dropped ({exc.rcvd.code if exc.rcvd else 1006})")

    def _fail(self, error: ProviderError) -> None:
        """Every live context ends with ``error``; the socket takes none any more."""
        if self.failed is None:
            self.failed = error
        contexts, self.contexts = self.contexts, {}
        for ctx in contexts.values():
            ctx.queue.put_nowait(fresh(error))
        read = sum(1 for c in contexts.values() if not c.abandoned)
        if read:  # replies lost (abandoned contexts are nobody's loss)
            log.warning("%s: socket ended under %d replies: %s", NAME, read, error)

    async def close(self) -> None:
        """Close now (any live context fails), waiting at most the connection's close_timeout."""
        self.retiring = self.closing = True
        try:
            await self.ws.close()
        finally:  # also when this close is cancelled (aclose's stuck-close bound)
            if not self.reader.done():
                self.reader.cancel()
            self._fail(ProviderError(NAME, "socket closed by the client"))  # if the reader had not
        await asyncio.gather(self.reader, return_exceptions=True)
