"""StreamLeg: the AudioLeg over one Plivo audio-stream WebSocket.

Caller audio (mu-law or L16 at 8 kHz, any chunk size) is re-cut into 20 ms frames; agent audio
leaves as paced playAudio + checkpoint pairs (see send_pacer.py); clear() sends clearAudio at once.
Hang-up is reported (LegEnded by ``agent``): the stream server, as the call's supervisor asks,
closes the socket (and ends the call through Plivo's REST API when credentials are configured).
DTMF goes out on the stream itself (sendDTMF). Transfer needs the REST API; once Plivo accepted
it the call runs the transfer XML, so ending the leg afterwards only closes the socket and never
hangs the transferred caller up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from bridge.leg import (
    FRAME_BYTES,
    AudioFrame,
    DtmfDigit,
    EndedBy,
    EventConsumer,
    EventFeed,
    LegEnded,
    LegEvent,
)
from bridge.media.events import EventChannel
from bridge.stream import protocol
from bridge.stream.send_pacer import Chunk, Playout

log = logging.getLogger(__name__)


class CallControl(Protocol):
    """Out-of-band control of a Plivo call (its REST API)."""

    async def hangup(self, call_uuid: str) -> bool: ...

    async def transfer(self, call_uuid: str, target: str) -> bool: ...

    async def send_digits(self, call_uuid: str, digits: str) -> bool: ...


class StreamLeg:
    def __init__(
        self,
        ws: Connection,
        start: protocol.Start,
        *,
        chunk_ms: int = 100,
        lead_ms: int = 200,
        control: CallControl | None = None,
    ) -> None:
        self.call_id = start.call_id
        self.stream_id = start.stream_id
        self.media_format = start.media_format
        self._ws = ws
        # a socket that writes several messages at once (connection.StreamConnection.send_texts)
        self._send_pair: Callable[[str, str], Awaitable[None]] | None = getattr(ws, "send_texts", None)
        self._control = control
        self._decode = start.media_format.decoder()
        self._encode = start.media_format.encoder()
        self._loop = asyncio.get_running_loop()
        self._channel = EventChannel()
        self._playout = Playout(self._channel.put, chunk_ms=chunk_ms, lead_ms=lead_ms)
        self._rx = bytearray()
        self._wake = asyncio.Event()
        self._clear_pending = False
        self._ended = False
        self._transferred = False
        self._sender: asyncio.Task[None] | None = None
        self.frames_in = 0
        self.chunks_out = 0
        self.clears_sent = 0

    # --- AudioLeg ----------------------------------------------------------------------

    def events(self) -> AsyncIterator[LegEvent]:
        return self._channel.stream()

    def consume(self, consumer: EventConsumer) -> EventFeed:
        return self._channel.attach(consumer)

    def play(self, utterance_id: str, pcm: bytes) -> None:
        if self._ended:
            return
        self._playout.play(utterance_id, pcm)
        self._wake.set()

    def end_utterance(self, utterance_id: str) -> None:
        self._playout.end(utterance_id, self._loop.time())
        self._wake.set()

    def clear(self) -> None:
        if self._playout.clear(self._loop.time()):
            self._clear_pending = True
        self._wake.set()

    def pause(self) -> None:
        # clearAudio now; the unplayed remainder is kept and sent again with new checkpoints
        if self._playout.pause(self._loop.time()):
            self._clear_pending = True
        self._wake.set()

    def resume(self) -> None:
        self._playout.resume(self._loop.time())
        self._wake.set()

    def heard_ms(self, utterance_id: str) -> int:
        return self._playout.heard_ms(utterance_id)

    async def send_dtmf(self, digits: str) -> None:
        # Plivo's "Messages to Plivo" include sendDTMF: no REST round trip, no credentials.
        if self._ended:
            return
        try:
            for digit in protocol.dtmf_digits(digits):
                await self._ws.send(protocol.send_dtmf(digit))
        except ValueError as exc:
            log.warning("DTMF not sent: %s", exc, extra={"call_id": self.call_id})
        except ConnectionClosed:
            pass

    async def transfer(self, target: str) -> bool:
        if self._control is None or self._ended:
            log.warning("transfer not possible: no Plivo REST credentials", extra={"call_id": self.call_id})
            return False
        ok = await self._control.transfer(self.call_id, target)
        self._transferred = self._transferred or ok
        return ok

    @property
    def transferred(self) -> bool:
        return self._transferred

    async def hangup(self, reason: str = "normal") -> None:
        """The agent is done: LegEnded(by agent); the owner ends the call on the wire."""
        self.end("transferred" if self._transferred else reason, "agent")

    async def finished(self) -> LegEnded:
        return await self._channel.finished()

    async def close(self, reason: str = "closed") -> None:
        """Ends the leg if need be and waits for its sender; the socket is the server's."""
        self.end(reason, "owner")
        sender = self._sender
        if sender is not None and sender is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    # --- driven by the server ----------------------------------------------------------

    def start_sender(self) -> None:
        self._sender = asyncio.create_task(self._send_loop(), name=f"stream-send-{self.call_id}")

    def on_message(self, msg: protocol.Message) -> None:
        now = self._loop.time()
        if isinstance(msg, protocol.Media):
            if msg.track not in ("inbound", ""):
                return
            pcm = self._decode(msg.payload)
            if not self._rx and len(pcm) == FRAME_BYTES:
                # Plivo's usual 20 ms message: one frame as it is, no re-cut copies
                self.frames_in += 1
                self._channel.put(AudioFrame(pcm, now))
                return
            self._rx += pcm
            while len(self._rx) >= FRAME_BYTES:
                pcm = bytes(self._rx[:FRAME_BYTES])
                del self._rx[:FRAME_BYTES]
                self.frames_in += 1
                self._channel.put(AudioFrame(pcm, now))
        elif isinstance(msg, protocol.Dtmf):
            self._channel.put(DtmfDigit(msg.digit, 0, now))
        elif isinstance(msg, protocol.PlayedStream):
            # its Progress/Done events go to a consumer once played() is through (no
            # re-entry into the playout from the consumer's reply)
            channel = self._channel
            channel.hold()
            try:
                self._playout.played(msg.name, now)
            finally:
                channel.release()
        elif isinstance(msg, protocol.ClearedAudio):
            self._playout.cleared()

    def end(self, reason: str, by: EndedBy = "peer") -> None:
        """The call is over for us: LegEnded (once), sender stopped."""
        if self._ended:
            return
        self._ended = True
        self._channel.put(LegEnded(reason, self._loop.time(), by))
        if self._sender is not None and self._sender is not asyncio.current_task():
            self._sender.cancel()
        self._wake.set()

    @property
    def ended(self) -> bool:
        return self._ended

    # --- sending -----------------------------------------------------------------------

    async def _send_loop(self) -> None:
        try:
            while not self._ended:
                if self._clear_pending:
                    self._clear_pending = False
                    self.clears_sent += 1
                    await self._ws.send(protocol.clear_audio(self.stream_id))
                channel = self._channel
                channel.hold()  # PlaybackStarted after next_chunk is through (as played())
                try:
                    step = self._playout.next_chunk(self._loop.time())
                finally:
                    channel.release()
                if isinstance(step, Chunk):
                    await self._send_chunk(step)
                    continue
                self._wake.clear()
                if step is None:
                    await self._wake.wait()
                else:
                    # a timer that sets the wake-up event: no timeout context and no
                    # cancellation (an exception raised and caught) for every 20 ms chunk
                    timer = self._loop.call_later(step, self._wake.set)
                    try:
                        await self._wake.wait()
                    finally:
                        timer.cancel()
        except ConnectionClosed:
            pass  # the receive side sees the close and ends the leg

    async def _send_chunk(self, chunk: Chunk) -> None:
        self.chunks_out += 1
        play = protocol.play_audio(self.media_format, self._encode(chunk.pcm))
        mark = protocol.checkpoint(self.stream_id, chunk.checkpoint)
        if self._send_pair is not None:
            await self._send_pair(play, mark)  # the stream server's socket: one write for both
        else:
            await self._ws.send(play)
            await self._ws.send(mark)
