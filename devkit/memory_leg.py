"""An in-memory AudioLeg: a scripted caller on one side, the engine on the other, no sockets.

Time comes from an injectable clock. ``step()`` is one 20 ms tick: one frame of agent audio
is "sent" (recorded in ``sent``, with the same Started/Progress/Done accounting as the RTP
leg) and one caller frame is delivered (queued caller audio or silence, plus an optional echo
of what the agent said a few frames before). Tests call ``run_for`` on a ManualClock; the
realtime mode paces ``step()`` on the event loop, as the RTP leg's media clock does.
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
    LegEnded,
    LegEvent,
    PlaybackDone,
    PlaybackProgress,
    PlaybackStarted,
)
from devkit.manual_clock import ManualClock

_SILENCE = bytes(FRAME_BYTES)


@dataclass(slots=True)
class _Utt:
    id: str
    carry: bytes = b""
    frames: int = 0
    heard_samples: int = 0
    started: bool = False
    ended: bool = False
    cancelled: bool = False
    done: bool = False


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
    ) -> None:
        self.call_id = call_id
        self.clock: Clock = clock or LoopClock()
        self.echo_gain = echo_gain
        self.transfer_ok = transfer_ok
        self.sent: list[SentFrame] = []  # every agent frame the caller heard, in order
        self.caller_audio = bytearray()  # every caller frame delivered (with echo mixed in)
        self.dtmf_sent: list[str] = []
        self.transfers: list[str] = []
        self.hangup_reason: str | None = None
        self.first_queued: dict[str, float] = {}  # utterance -> clock time of its first play()
        self._events: asyncio.Queue[LegEvent] = asyncio.Queue()
        self._caller = bytearray()
        self._digits: deque[str] = deque()
        self._items: deque[tuple[_Utt, bytes | None]] = deque()  # whole frames, None = end mark
        self._utts: dict[str, _Utt] = {}
        self._echo: deque[bytes] = deque([_SILENCE] * echo_delay_frames, maxlen=max(1, echo_delay_frames))
        self._progress_every = progress_every
        self._ended = False
        self._task: asyncio.Task[None] | None = None
        # As the RTP leg: a talkspurt's first frame goes out when play() is called, taking the
        # next tick's slot (that tick sends nothing).
        self._talking = False
        self._early: bytes | None = None
        self._paused = False
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
        if self._early is not None:
            played, self._early = self._early, None
        else:
            played = self._send_frame(t)
            self._talking = played is not _SILENCE
        self._echo.append(played)
        frame = bytes(self._caller[:FRAME_BYTES])
        del self._caller[:FRAME_BYTES]
        frame = frame + _SILENCE[len(frame) :]
        if self.echo_gain > 0:
            frame = _mix(frame, self._echo[0], self.echo_gain)
        self.caller_audio += frame
        self._events.put_nowait(AudioFrame(frame, t))
        if self._digits:
            self._events.put_nowait(DtmfDigit(self._digits.popleft(), 100, t))

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
        """Tick every 20 ms on the event loop (absolute deadlines: no drift)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._pace())

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while not self._ended:
            self.step()
            deadline += FRAME_MS / 1000
            await asyncio.sleep(max(0.0, deadline - loop.time()))

    async def remote_hangup(self, reason: str = "bye") -> None:
        """The caller hangs up."""
        self._finish(reason)

    def _finish(self, reason: str) -> None:
        if not self._ended:
            self._ended = True
            self._events.put_nowait(LegEnded(reason, self.clock.now()))

    async def aclose(self) -> None:
        self._finish("closed")
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # -- playback accounting ------------------------------------------------------------------
    def _send_frame(self, t: float) -> bytes:
        if self._paused:
            return _SILENCE
        self._finish_ended(t)
        if not self._items:
            return _SILENCE
        utt, pcm = self._items.popleft()
        assert pcm is not None
        utt.frames += 1
        utt.heard_samples += len(pcm) // 2
        self.sent.append(SentFrame(t, utt.id, pcm))
        if not utt.started:
            utt.started = True
            self._events.put_nowait(PlaybackStarted(utt.id, t))
        if utt.frames % self._progress_every == 0:
            self._events.put_nowait(PlaybackProgress(utt.id, self.heard_ms(utt.id), t))
        self._finish_ended(t)
        return pcm + _SILENCE[len(pcm) :]

    def _finish_ended(self, t: float) -> None:
        while self._items and self._items[0][1] is None:
            utt = self._items.popleft()[0]
            utt.done = True
            self._events.put_nowait(PlaybackDone(utt.id, self.heard_ms(utt.id), t))

    # -- AudioLeg -----------------------------------------------------------------------------
    def events(self) -> AsyncIterator[LegEvent]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[LegEvent]:
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, LegEnded):
                return

    def _utt(self, utterance_id: str) -> _Utt:
        utt = self._utts.get(utterance_id)
        if utt is None:
            utt = self._utts[utterance_id] = _Utt(utterance_id)
        return utt

    def play(self, utterance_id: str, pcm: bytes) -> None:
        utt = self._utt(utterance_id)
        if utt.cancelled or utt.ended or self._ended:
            return
        self.first_queued.setdefault(utterance_id, self.clock.now())
        idle = not self._talking and self._early is None and not self._items and not self._paused
        data = utt.carry + pcm
        full = len(data) // FRAME_BYTES * FRAME_BYTES
        for i in range(0, full, FRAME_BYTES):
            self._items.append((utt, data[i : i + FRAME_BYTES]))
        utt.carry = data[full:]
        if idle and self._items:
            self._early = self._send_frame(self.clock.now())
            self._talking = True

    def end_utterance(self, utterance_id: str) -> None:
        utt = self._utt(utterance_id)
        if utt.cancelled or utt.ended:
            return
        utt.ended = True
        tail = utt.carry[: len(utt.carry) // 2 * 2]
        utt.carry = b""
        if tail:
            self._items.append((utt, tail))
        self._items.append((utt, None))

    def clear(self) -> None:
        self._paused = False
        self.pauses.append((self.clock.now(), "clear"))
        self._items.clear()
        for utt in self._utts.values():
            if not utt.done:
                utt.cancelled = True
                utt.carry = b""

    def pause(self) -> None:
        self._paused = True
        self.pauses.append((self.clock.now(), "pause"))

    def resume(self) -> None:
        self._paused = False
        self.pauses.append((self.clock.now(), "resume"))

    def heard_ms(self, utterance_id: str) -> int:
        utt = self._utts.get(utterance_id)
        return 0 if utt is None else utt.heard_samples // 8

    def queued_ms(self) -> int:
        return sum(1 for _, pcm in self._items if pcm is not None) * FRAME_MS

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
