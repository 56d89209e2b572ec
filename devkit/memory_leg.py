"""An in-memory AudioLeg: a scripted caller on one side, the engine on the other, no sockets.

The sending side is the RTP leg's own: agent audio goes through ``bridge.media.playback.
PlaybackQueue`` (framing, Started/Progress/Done, heard_ms) and the RTP leg's talkspurt rule (a
talkspurt's first frame leaves when ``play()`` is called and takes the next tick's slot), so the
driver tests and benches measure the real queue, not a copy. What differs from RtpLeg is only
the I/O: frames are recorded in ``sent`` instead of sent as RTP, and the caller is a script.

Time comes from an injectable clock. ``step()`` is one 20 ms tick: one frame of agent audio is
"sent" and one caller frame is delivered (queued caller audio or silence, plus an optional echo
of what the agent said a few frames before). Tests call ``run_for`` on a ManualClock; the
realtime mode puts the leg on the RTP legs' own media clock (one per event loop).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from bridge.conversation.driver_clock import Clock, LoopClock
from bridge.leg import (
    FRAME_BYTES,
    FRAME_MS,
    AudioFrame,
    DtmfDigit,
    EventConsumer,
    EventFeed,
    LegEnded,
    LegEvent,
)
from bridge.media.events import EventChannel
from bridge.media.media_clock import MediaClock, clock_for_loop
from bridge.media.playback import PlaybackQueue
from devkit.manual_clock import ManualClock

_SILENCE = bytes(FRAME_BYTES)


@dataclass(slots=True)
class _Run:
    """``frames`` consecutive queued frames of one utterance."""

    utterance_id: str
    frames: int


@dataclass(frozen=True, slots=True)
class SentFrame:
    t: float
    utterance_id: str
    pcm: bytes


class MemoryLeg:
    def __init__(
        self,
        call_id: str = "memory-call",
        clock: Clock | None = None,
        *,
        echo_gain: float = 0.0,
        echo_delay_frames: int = 3,
        progress_every: int = 5,
        transfer_ok: bool = True,
        keep_caller_audio: bool = False,
        keep_agent_audio: bool = True,
    ) -> None:
        self.call_id = call_id
        self.clock: Clock = clock or LoopClock()
        self.echo_gain = echo_gain
        self.transfer_ok = transfer_ok
        self.sent: list[SentFrame] = []  # every agent frame the caller heard, in order
        # False: ``sent`` keeps each frame's time and utterance but not its audio (16 KB a
        # second of agent speech a call that a bench's RSS per call would count as the bridge's)
        self._keep_agent_audio = keep_agent_audio
        # every caller frame delivered (with echo mixed in), if asked for: 16 KB a second a call
        self.caller_audio = bytearray()
        self._keep_caller_audio = keep_caller_audio
        self.dtmf_sent: list[str] = []
        self.transfers: list[str] = []
        self.hangup_reason: str | None = None
        self.first_queued: dict[str, float] = {}  # utterance -> clock time of its first play()
        # the RTP leg's own event channel (bounded caller frames, one consumer)
        self._events = EventChannel()
        self._caller = bytearray()
        self._digits: deque[str] = deque()
        self._queue = PlaybackQueue(self._events.put, progress_every=progress_every)
        # Whose frames the queue holds, in order. Counted from the queue's own queued_ms around
        # each play()/end() (not re-cut here), so ``sent`` can name each frame's utterance.
        self._owners: deque[_Run] = deque()
        self._echo: deque[bytes] = deque([_SILENCE] * echo_delay_frames, maxlen=max(1, echo_delay_frames))
        self._ended = False
        self._media_clock: MediaClock | None = None  # realtime mode: the loop's shared clock
        # RtpLeg's talkspurt rule: a talkspurt's first frame goes out when play() is called,
        # taking the next tick's slot (that tick sends nothing).
        self._talking = False
        self._early: bytes | None = None
        self._paused = False
        self._send_hold = False  # _send's hold on the events, released in _receive
        self.pauses: list[tuple[float, str]] = []  # (clock time, "pause" | "resume" | "clear")

    # -- the scripted caller ----------------------------------------------------------------
    def say(self, pcm: bytes) -> None:
        """Queue caller audio (8 kHz s16le); it goes out frame by frame, then silence."""
        self._caller += pcm

    def press(self, digits: str) -> None:
        self._digits.extend(digits)

    @property
    def caller_pending_ms(self) -> int:
        return len(self._caller) // 16

    @property
    def ended(self) -> bool:
        return self._ended

    def agent_audio(self, utterance_id: str | None = None) -> bytes:
        return b"".join(f.pcm for f in self.sent if utterance_id is None or f.utterance_id == utterance_id)

    def step(self) -> None:
        """One 20 ms tick: send phase first (as the RTP leg does), then receive."""
        if self._ended:
            return
        t = self.clock.now()
        self._send(t)
        self._receive(t)

    def _send(self, t: float) -> None:
        # as RtpLeg.on_send: the queue's playback events reach a consumer in the receive
        # phase (_receive), not in the middle of the send nor between two legs' sends
        if not self._send_hold:
            self._send_hold = True
            self._events.hold()
        if self._early is not None:
            played, self._early = self._early, None
        else:
            # Paused (caller speech being judged): the queue waits, nothing of it is heard.
            pcm = None if self._paused else self._next_frame(t)
            self._talking = pcm is not None
            played = _SILENCE if pcm is None else pcm
        self._echo.append(played)

    def _release_send_hold(self) -> None:
        if self._send_hold:
            self._send_hold = False
            self._events.release()

    def _receive(self, t: float) -> None:
        self._release_send_hold()
        if self._caller:
            frame = bytes(self._caller[:FRAME_BYTES])
            del self._caller[:FRAME_BYTES]
            frame = frame + _SILENCE[len(frame) :]
        else:
            frame = _SILENCE  # the caller is quiet: no copy
        if self.echo_gain > 0:
            frame = _mix(frame, self._echo[0], self.echo_gain)
        if self._keep_caller_audio:
            self.caller_audio += frame
        self._events.put(AudioFrame(frame, t))
        if self._digits:
            self._events.put(DtmfDigit(self._digits.popleft(), 100, t))

    async def run_for(self, seconds: float, settle: int = 30) -> None:
        """ManualClock only: ``seconds`` of ticks, letting the event loop settle after each."""
        clock = self.clock
        if not isinstance(clock, ManualClock):
            raise TypeError("run_for needs a ManualClock; use start_realtime() otherwise")
        for _ in range(max(1, round(seconds * 1000 / FRAME_MS))):
            if self._ended:
                return
            self.step()
            for _ in range(settle):
                await asyncio.sleep(0)
            clock.advance(FRAME_MS / 1000)

    def start_realtime(self) -> None:
        """Tick every 20 ms on the process's media clock, as the RTP legs do
        (bridge/media/media_clock.py: one wake-up a tick for every leg, absolute deadlines;
        all legs send, then all receive)."""
        if self._media_clock is None and not self._ended:
            self._media_clock = clock_for_loop(asyncio.get_running_loop())
            self._media_clock.add(self)  # its first tick comes within 20 ms

    # the media clock's Ticking protocol
    def on_send(self, now: float) -> None:
        if not self._ended:
            self._send(self.clock.now())

    def on_readable(self, now: float) -> None:
        """No socket: nothing to read."""

    def on_tick(self, now: float) -> None:
        if not self._ended:
            self._receive(self.clock.now())
        else:
            self._release_send_hold()

    def _stop_realtime(self) -> None:
        clock, self._media_clock = self._media_clock, None
        if clock is not None:
            clock.remove(self)

    async def remote_hangup(self, reason: str = "bye") -> None:
        """The caller hangs up."""
        self._finish(reason)

    def _finish(self, reason: str) -> None:
        if not self._ended:
            self._ended = True
            self._stop_realtime()
            self._events.put(LegEnded(reason, self.clock.now()))

    async def aclose(self) -> None:
        self._finish("closed")
        self._stop_realtime()

    # -- sending (the RTP leg's queue) -------------------------------------------------------
    def _next_frame(self, t: float) -> bytes | None:
        pcm = self._queue.next_frame(t, True)
        if pcm is None:
            return None
        owner = self._owners[0]
        owner.frames -= 1
        if owner.frames == 0:
            self._owners.popleft()
        self.sent.append(SentFrame(t, owner.utterance_id, pcm if self._keep_agent_audio else b""))
        return pcm

    def _note_queued(self, utterance_id: str, before_ms: int) -> None:
        frames = (self._queue.queued_ms - before_ms) // FRAME_MS
        if frames <= 0:
            return
        if self._owners and self._owners[-1].utterance_id == utterance_id:
            self._owners[-1].frames += frames
        else:
            self._owners.append(_Run(utterance_id, frames))

    # -- AudioLeg -----------------------------------------------------------------------------
    def events(self) -> AsyncIterator[LegEvent]:
        return self._events.stream()

    def consume(self, consumer: EventConsumer) -> EventFeed:
        return self._events.attach(consumer)

    def take_events(self) -> list[LegEvent]:
        """Tests that step the leg by hand: the events queued so far, no longer queued."""
        channel = self._events
        out = list(channel._items)
        channel._items.clear()
        channel._frames = 0  # the channel's bound counts the frames it holds
        return out

    def play(self, utterance_id: str, pcm: bytes) -> None:
        if self._ended:
            return
        self.first_queued.setdefault(utterance_id, self.clock.now())
        before = self._queue.queued_ms
        idle = not self._talking and self._early is None and before == 0 and not self._paused
        self._queue.play(utterance_id, pcm)
        self._note_queued(utterance_id, before)
        if idle:
            early = self._next_frame(self.clock.now())
            if early is not None:
                self._talking = True
                self._early = early

    def end_utterance(self, utterance_id: str) -> None:
        before = self._queue.queued_ms
        self._queue.end(utterance_id)
        self._note_queued(utterance_id, before)

    def clear(self) -> None:
        self._paused = False
        self.pauses.append((self.clock.now(), "clear"))
        self._queue.report_progress(self.clock.now())  # as RtpLeg: the exact position
        self._queue.clear()
        self._owners.clear()

    def pause(self) -> None:
        self._paused = True
        self.pauses.append((self.clock.now(), "pause"))
        self._queue.report_progress(self.clock.now())

    def resume(self) -> None:
        self._paused = False
        self.pauses.append((self.clock.now(), "resume"))

    def heard_ms(self, utterance_id: str) -> int:
        return self._queue.heard_ms(utterance_id)

    def queued_ms(self) -> int:
        return self._queue.queued_ms

    async def send_dtmf(self, digits: str) -> None:
        self.dtmf_sent.append(digits)

    async def transfer(self, target: str) -> bool:
        self.transfers.append(target)
        return self.transfer_ok

    async def hangup(self, reason: str = "normal") -> None:
        if self.hangup_reason is None and not self._ended:
            self.hangup_reason = reason
        self._finish(reason)


def _mix(a: bytes, b: bytes, gain: float) -> bytes:
    x = np.frombuffer(a, dtype="<i2").astype(np.int32)
    y = np.frombuffer(b, dtype="<i2").astype(np.float32) * gain
    return np.clip(x + y.astype(np.int32), -32768, 32767).astype("<i2").tobytes()
