"""Fault injection and a journal of what each fake saw (requests, aborts, control messages)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Faults:
    """Behaviour of one fake provider. Tests mutate it between requests."""

    # Reject the next `status_times` requests (HTTP status, or the WebSocket handshake) with this.
    status: int = 0
    status_times: int = 1_000_000
    # Wait before the first byte/message of a reply (latency profile, or a slow-first-byte test).
    first_byte_delay_s: float = 0.0
    # Pause between later chunks.
    chunk_delay_s: float = 0.0
    # After this many chunks/messages: go silent with the connection held open.
    stall_after: int | None = None
    # After this many chunks/messages (STT: audio bytes received): cut the TCP connection.
    drop_after: int | None = None
    # Apply stall/drop only to this many connections, then behave again (reconnect tests).
    fault_times: int = 1_000_000

    def take_status(self) -> int:
        """The status to refuse this request with (0: accept); consumes one use."""
        if self.status and self.status_times > 0:
            self.status_times -= 1
            return self.status
        return 0

    def take_stream_faults(self) -> tuple[int | None, int | None]:
        """(stall_after, drop_after) for a new stream; consumes one use if any is set."""
        if (self.stall_after is None and self.drop_after is None) or self.fault_times <= 0:
            return None, None
        self.fault_times -= 1
        return self.stall_after, self.drop_after


class FaultedStream:
    """One reply stream's stall/drop faults (taken from ``Faults`` when the stream starts),
    applied to the chunks a fake sends: before chunk ``drop_after`` the TCP connection is cut,
    before chunk ``stall_after`` the stream goes silent with the connection held open. ``sent``
    counts chunks across every ``chunks()`` call of the stream (a WebSocket sends several
    replies on one stream)."""

    def __init__(self, faults: Faults, journal: Journal, transport: asyncio.Transport | None) -> None:
        self.stall_after, self.drop_after = faults.take_stream_faults()
        self._journal = journal
        self._transport = transport
        self.sent = 0
        self.dropped = False  # the connection was cut: send nothing more, not even the end

    async def chunks(self, items: Iterable[T]) -> AsyncIterator[T]:
        for item in items:
            if self.sent == self.drop_after:
                self._journal.add("dropped", sent=self.sent)
                self.dropped = True
                if self._transport is not None:
                    self._transport.abort()
                return
            if self.sent == self.stall_after:
                self._journal.add("stalled", sent=self.sent)
                await asyncio.sleep(3600)  # held open until the client gives up
            yield item
            self.sent += 1


@dataclass
class Event:
    kind: str  # "request", "rejected", "aborted", "completed", "control", "dropped", "stalled"
    at: float  # time.monotonic() when it happened (same process as the client in tests)
    data: dict[str, Any] = field(default_factory=dict)


class Journal:
    """Append-only record of one fake's activity, awaitable from tests (bounded waits)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def add(self, kind: str, **data: Any) -> Event:
        event = Event(kind, time.monotonic(), data)
        self.events.append(event)
        self._changed.set()
        return event

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    def count(self, kind: str) -> int:
        return len(self.of(kind))

    async def wait_for(self, predicate: Callable[[Journal], bool], limit_s: float = 5.0) -> None:
        """Wait until predicate(journal) holds; TimeoutError after `limit_s` seconds."""
        async with asyncio.timeout(limit_s):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    def clear(self) -> None:
        self.events.clear()
