"""The call recording in listen mode: every caller frame the listener got, in order, beside
the agent audio of the tick it belongs to.

In listen mode (listen_buffer.py) a tick hands on any number of caller frames: none while a
missing packet is waited for, several once it came (or once a stalled loop reads a burst). The
recording writes one row (caller, agent) per 20 ms. Here the side that is ahead waits for the
other: agent frames of the ticks that still owe a caller frame are held (up to ``max_skew``
frames, only while the listener is waiting for one) so that a late frame lands on the tick it
was sent for; caller frames beyond one a tick are held (up to ``max_skew``) for the next ticks
and, past that, written in rows of their own with agent silence (the clock skipped those ticks
and sent nothing in them). Nothing is dropped; at most ``2 * max_skew`` frames are held.
"""

from __future__ import annotations

from collections import deque

from bridge.media.recording import CallRecorder


class ListenRecording:
    __slots__ = ("_agent", "_caller", "_max", "_recorder")

    def __init__(self, recorder: CallRecorder, max_skew: int = 5) -> None:
        self._recorder = recorder
        self._max = max_skew
        self._caller: deque[bytes] = deque()
        self._agent: deque[bytes | None] = deque()

    def tick(self, caller: list[bytes], agent: bytes | None, waiting: bool) -> None:
        """One tick: the caller frames it delivered, the agent frame it sent; ``waiting``: the
        listener is delivering (a frame not there yet is still owed, not a paused sender)."""
        held, pending = self._caller, self._agent
        write = self._recorder.write
        if caller:
            held.extend(caller)
        pending.append(agent)
        while held and pending:
            write(held.popleft(), pending.popleft())
        keep = self._max if waiting else 0
        while len(pending) > keep:
            write(None, pending.popleft())
        while len(held) > self._max:
            write(held.popleft(), None)

    def flush(self) -> None:
        """Write what is held (the call ends)."""
        held, pending = self._caller, self._agent
        while held or pending:
            self._recorder.write(held.popleft() if held else None, pending.popleft() if pending else None)
