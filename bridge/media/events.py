"""A single-consumer event channel for a leg: cheap to feed from the media clock callback.

Caller frames and DTMF digits are bounded (a consumer that stops reading must not grow memory
without end, and a peer can send digits as fast as it likes: the newest are dropped and
counted); every other event is the leg's own (playback marks, bounded by what the agent
plays) or LegEnded, and is always kept. After
LegEnded nothing more is accepted, so LegEnded is the last event and comes exactly once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from bridge.leg import AudioFrame, DtmfDigit, LegEnded, LegEvent


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
        self.dropped_frames = 0
        self.dropped_digits = 0

    @property
    def ended(self) -> bool:
        return self._ended

    def put(self, event: LegEvent) -> None:
        if self._ended:
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
        elif isinstance(event, LegEnded):
            self._ended = True
            self._end = event
            for fut in self._end_waiters:
                if not fut.done():
                    fut.set_result(None)
            self._end_waiters.clear()
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
        event = items.popleft()
        if isinstance(event, AudioFrame):
            self._frames -= 1
        elif isinstance(event, DtmfDigit):
            self._digits -= 1
        elif isinstance(event, LegEnded):
            self._taken_end = True
        return event


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
