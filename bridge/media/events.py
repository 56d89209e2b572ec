"""A single-consumer event channel for a leg: cheap to feed from the media clock callback.

Caller frames and DTMF digits are bounded (a consumer that stops reading must not grow memory
without end, and a peer can send digits as fast as it likes: the newest are dropped and
counted); every other event is the leg's own (playback marks, bounded by what the agent
plays) or LegEnded, and is always kept. After
LegEnded nothing more is accepted, so LegEnded is the last event and comes exactly once.

Two ways to take the events, one at a time: ``stream()`` (an async iterator: the consumer is
a task, woken per event) or ``attach(consumer)`` (AudioLeg.consume: each event is handed to a
plain function as it is put, in the putter's own call, with no future and no task wake-up).
An attached consumer is never called re-entrantly: an event put while it runs, or while it
(or the leg) holds the channel (``hold``/``release``), is queued under the same bounds and
handed over, in order, when the last hold is released. So a frame whose decision waits for
something (silero's batched window) holds the channel, and later events wait behind it.

``_held`` and ``_items`` are also read and set by RtpLeg's tick (its hold over the send
phase, taken and given back without a call: ``hold`` / ``release`` exactly, in their usual
case), so keep their meaning if you change them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable

from bridge.leg import AudioFrame, DtmfDigit, LegEnded, LegEvent

log = logging.getLogger(__name__)


class EventChannel:
    def __init__(self, max_frames: int = 500, max_digits: int = 100) -> None:
        self._items: deque[LegEvent] = deque()
        self._frames = 0
        self._max_frames = max_frames
        self._digits = 0
        self._max_digits = max_digits  # far more than a person keys while the agent is busy
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._taken_end = False
        self._end: LegEnded | None = None
        self._end_waiters: list[asyncio.Future[None]] = []
        # push mode (attach): the consumer, and how many holds keep events queued (the
        # consumer's own run counts as one: no re-entrant call)
        self._consumer: Callable[[LegEvent], None] | None = None
        self._held = 0
        self.dropped_frames = 0
        self.dropped_digits = 0

    @property
    def ended(self) -> bool:
        return self._ended

    def put(self, event: LegEvent) -> None:
        consumer = self._consumer
        if consumer is not None and not self._held and not self._items and not self._ended \
                and not isinstance(event, LegEnded):
            # The usual event in push mode (a caller frame every 20 ms): straight to the
            # consumer, as the general case below with _hand inline.
            self._held = 1
            try:
                consumer(event)
            except Exception:  # a bug in the consumer must not stop the leg's own tick
                log.exception("leg event consumer failed on %s", type(event).__name__)
            if self._consumer is consumer:
                self._held -= 1
                if not self._held and self._items:
                    self._drain()
            return
        if self._ended:
            return
        if isinstance(event, LegEnded):
            self._ended = True
            self._end = event
            for fut in self._end_waiters:
                if not fut.done():
                    fut.set_result(None)
            self._end_waiters.clear()
        consumer = self._consumer
        if consumer is not None and not self._held and not self._items:
            # the usual case in push mode: straight to the consumer, nothing queued
            self._taken_end = self._ended  # (this event is LegEnded): stream() ends at once
            self._held = 1
            self._hand(consumer, event)
            if self._consumer is consumer:
                self._held -= 1
                if not self._held and self._items:
                    self._drain()
            return
        if isinstance(event, AudioFrame):
            if self._frames >= self._max_frames:
                self.dropped_frames += 1
                return
            self._frames += 1
        elif isinstance(event, DtmfDigit):
            if self._digits >= self._max_digits:
                self.dropped_digits += 1
                return
            self._digits += 1
        self._items.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def finished(self) -> LegEnded:
        """The LegEnded put here, once there is one (any number of waiters; takes no event)."""
        while self._end is None:
            fut = asyncio.get_running_loop().create_future()
            self._end_waiters.append(fut)
            await fut
        return self._end

    def stream(self) -> AsyncIterator[LegEvent]:
        """Events in order until (and including) LegEnded. One consumer at a time."""
        return _Stream(self)

    async def next(self) -> LegEvent:
        """The next event; raises StopAsyncIteration after LegEnded was taken."""
        items = self._items
        while not items:
            if self._taken_end:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._take()

    def _take(self) -> LegEvent:
        event = self._items.popleft()
        if isinstance(event, AudioFrame):
            self._frames -= 1
        elif isinstance(event, DtmfDigit):
            self._digits -= 1
        elif isinstance(event, LegEnded):
            self._taken_end = True
        return event

    # -- push mode ---------------------------------------------------------------------------
    def attach(self, consumer: Callable[[LegEvent], None]) -> EventChannel:
        """Hand every event to ``consumer`` from now on instead of queueing it for stream().
        Starts held: events (and those already queued) wait until ``release()``, so the
        consumer can finish setting up first. Returns the channel (the AudioLeg's EventFeed)."""
        if self._consumer is not None:
            raise RuntimeError("this leg's events already have a consumer")
        self._consumer = consumer
        self._held = 1
        return self

    def hold(self) -> None:
        """Queue events (under the bounds) instead of handing them over, until ``release``."""
        self._held += 1

    def release(self) -> None:
        """Undo one ``hold``; the last one hands the queued events over, in order, until the
        consumer holds again. One after ``detach`` (which forgets every hold) does nothing."""
        if self._held <= 0:
            return
        self._held -= 1
        if not self._held and self._items and self._consumer is not None:
            self._drain()

    def detach(self) -> None:
        """No consumer any more: events queue again (under the bounds) for stream()."""
        self._consumer = None
        self._held = 0

    def _drain(self) -> None:
        consumer = self._consumer
        items = self._items
        while items and consumer is not None and not self._held:
            event = self._take()
            self._held = 1
            self._hand(consumer, event)
            if self._consumer is not consumer:
                return  # detached (or replaced) by the consumer itself
            self._held -= 1

    def _hand(self, consumer: Callable[[LegEvent], None], event: LegEvent) -> None:
        try:
            consumer(event)
        except Exception:  # a bug in the consumer must not stop the leg's own tick
            log.exception("leg event consumer failed on %s", type(event).__name__)


class _Stream:
    """A plain async iterator (not an async generator: abandoning it mid-way leaves no
    finaliser task behind)."""

    __slots__ = ("_channel",)

    def __init__(self, channel: EventChannel) -> None:
        self._channel = channel

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> LegEvent:
        return await self._channel.next()
