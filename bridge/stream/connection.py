"""The stream server's WebSocket connection: Plivo's whole text messages taken as they arrive,
and several outgoing messages written at once.

Receiving. ``on_text`` (set once the stream has started) sees each whole text message in
``data_received``; what it takes (media, playedStream, ...: True) never goes through the
websockets message queue and the reader task's ``recv()`` (a task wake-up and two futures per
message, 50 times a second per call). Once websockets' parser waits at a frame boundary the
connection also cuts the byte stream into frames itself (frames.py) and unmasks a whole
masked text frame with websockets' own ``apply_mask``: that skips websockets' generator-based
frame parser, its event list and its per-read bookkeeping for the 20 ms messages. Every frame it
does not take (control frames, fragments, binary, close, oversized, anything while closing, and
what ``on_text`` leaves: stop, start, bad or unknown messages) goes to websockets as its bytes,
in order, so websockets keeps the protocol. While an earlier message waits for ``recv()`` the
later ones queue behind it (order kept).

Sending. ``send_texts`` writes a playAudio and its checkpoint in one send context and one
socket write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State
from websockets.speedups import apply_mask

from bridge.stream.frames import FIN_TEXT, fragment_state, frame_bounds, parser_at_frame_start

log = logging.getLogger(__name__)

# Frames above this go to websockets as they arrive (it enforces max_size): never buffered here.
FAST_MAX_BYTES = 65536


class StreamConnection(ServerConnection):
    on_text: Callable[[bytes], bool] | None = None
    _failures = 0
    _cutting = False  # this connection cuts frames itself (websockets' parser at a boundary)
    _tail = b""  # an incomplete frame, kept until the rest arrives
    _skip = 0  # bytes of an oversized frame still to hand to websockets as they come
    _fragmenting = False  # a fragmented message is open (its continuation frames go to websockets)
    _max = FAST_MAX_BYTES
    frames_cut = 0  # whole text frames cut and taken here (tests, benches)

    # --- receiving ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._cutting:
            if self.on_text is None or self.protocol.state is not State.OPEN \
                    or not parser_at_frame_start(self.protocol):
                super().data_received(data)
                return
            self._cutting = True
            self._max = self._limit()
            # a fragmented message websockets has begun (its next fragments are websockets')
            self._fragmenting = getattr(self.protocol, "current_size", None) is not None
        if self._tail:
            data = self._tail + data
            self._tail = b""
        pos = 0  # the next frame
        if self._skip:
            pos = min(self._skip, len(data))
            self._skip -= pos
        done = 0  # data[done:pos] is still to go to websockets
        end_of_data = len(data)
        while pos < end_of_data:
            if self.on_text is None or self.protocol.state is not State.OPEN:
                self._stop_cutting()  # closing, or the call is over: websockets takes it all
                break
            bounds = frame_bounds(data, pos)
            if bounds is None:
                break
            start, end, masked = bounds
            first = data[pos]
            if end - start > self._max:
                # websockets takes it as it comes (and refuses it over max_size)
                self._fragmenting = fragment_state(first, self._fragmenting)
                self._skip = max(0, end - end_of_data)
                pos = min(end, end_of_data)
                continue
            if end > end_of_data:
                break
            if first == FIN_TEXT and masked and not self._fragmenting:
                if done < pos:
                    super().data_received(data[done:pos])
                    done = pos
                if self.on_text is not None and self.protocol.state is State.OPEN and self._nothing_queued():
                    if self._take(apply_mask(data[start:end], data[start - 4:start])):
                        self.frames_cut += 1
                        pos = done = end
                        continue
            else:
                self._fragmenting = fragment_state(first, self._fragmenting)
            pos = end
        if done < pos:
            super().data_received(data[done:pos])
        if pos < end_of_data:
            if self._cutting:
                self._tail = data[pos:]
            else:
                super().data_received(data[pos:])

    def _limit(self) -> int:
        """The largest frame cut here: within websockets' max_size, which websockets enforces
        on the rest."""
        max_size = self.protocol.max_message_size
        return FAST_MAX_BYTES if max_size is None else min(FAST_MAX_BYTES, max_size)

    def _stop_cutting(self) -> None:
        self._cutting = False
        self._skip = 0

    def eof_received(self) -> None:
        self._flush_tail()
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._flush_tail()
        super().connection_lost(exc)

    def _flush_tail(self) -> None:
        # an incomplete frame: websockets' parser sees the same bytes it would have (no event)
        if self._tail:
            tail, self._tail = self._tail, b""
            with contextlib.suppress(EOFError):  # the stream already ended for websockets
                self.protocol.receive_data(tail)

    def process_event(self, event: Event) -> None:
        # the frames websockets parsed (before cutting starts, and the ones not cut here)
        if self.on_text is not None and type(event) is Frame and event.opcode is Opcode.TEXT and event.fin \
                and self._nothing_queued() and self._take(bytes(event.data)):
            return
        super().process_event(event)

    def _take(self, data: bytes) -> bool:
        take = self.on_text
        if take is None:
            return False
        try:
            return take(data)
        except Exception:  # never out of data_received: that would drop the connection
            self._failures += 1
            if self._failures <= 3 or self._failures % 1000 == 0:
                log.exception("stream message handling failed in the socket (%d)", self._failures)
            return True  # that message is lost, not the call

    def _nothing_queued(self) -> bool:
        """No earlier message waits for ``recv()``: taking this one keeps the order (a message
        left to the queue is followed there by the rest until the reader has taken it)."""
        try:
            return len(self.recv_messages.frames) == 0
        except (AttributeError, TypeError):  # another websockets' internals: always queue
            return False

    # --- sending -----------------------------------------------------------------------

    async def send_texts(self, *messages: str) -> None:
        """Several text messages in one socket write (a playAudio and its checkpoint): one
        send context, one ``send`` system call, where ``send`` twice costs both twice. The
        pattern websockets documents for ``send_context``; waits like ``send`` while a
        fragmented message is being sent."""
        while self.send_in_progress is not None:
            await asyncio.shield(self.send_in_progress)
        async with self.send_context():
            for message in messages:
                self.protocol.send_text(message.encode())

    def send_data(self) -> None:
        """As websockets' ``send_data``, but the frames ready together go out in one write."""
        chunks = self.protocol.data_to_send()
        if len(chunks) > 1 and all(chunks):
            self.transport.write(b"".join(chunks))
            return
        for data in chunks:
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():  # half-close, as websockets does
                with contextlib.suppress(Exception):
                    self.transport.write_eof()
            else:
                self.transport.close()
