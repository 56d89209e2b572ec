"""The AudioLeg seam: one side of a call, whatever the transport (RTP, Plivo stream, memory).

Frames are 20 ms of 8 kHz 16-bit little-endian mono PCM (320 bytes). The leg paces playback at
real time itself; the engine only queues utterances and reacts to events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 160
FRAME_BYTES = FRAME_SAMPLES * 2  # 320 bytes of s16le


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """20 ms of caller audio (s16le, 8 kHz). ``t`` is the leg clock's receive time (s)."""

    pcm: bytes
    t: float


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    digit: str
    duration_ms: int
    t: float


@dataclass(frozen=True, slots=True)
class PlaybackStarted:
    """The first packet of an utterance left for the caller (latency mark first_audio_out)."""

    utterance_id: str
    t: float


@dataclass(frozen=True, slots=True)
class PlaybackProgress:
    """How much of an utterance the caller has heard so far (RTP: sent; stream: playedStream)."""

    utterance_id: str
    heard_ms: int
    t: float


@dataclass(frozen=True, slots=True)
class PlaybackDone:
    """All queued audio of an utterance (closed with ``end_utterance``) has been heard."""

    utterance_id: str
    heard_ms: int
    t: float


EndedBy = Literal["agent", "media", "peer", "owner"]
"""Who ended a leg: ``agent`` (its hangup()), ``media`` (no caller media for too long),
``peer`` (the far end or the transport already ended the call: BYE, CANCEL, socket closed),
``owner`` (the call's supervisor: drain, shutdown)."""


@dataclass(frozen=True, slots=True)
class LegEnded:
    """The call is over (BYE, socket closed, RTP timeout, ...). The last event of a leg.

    A leg only reports: when ``by`` is ``agent`` or ``media`` the call is still up on the wire,
    and the call's supervisor (``bridge/supervisor.py``) ends it (SIP BYE, stream close)."""

    reason: str
    t: float
    by: EndedBy = "peer"


LegEvent = AudioFrame | DtmfDigit | PlaybackStarted | PlaybackProgress | PlaybackDone | LegEnded

EventConsumer = Callable[[LegEvent], None]


class EventFeed(Protocol):
    """A leg's events handed to one plain function (``AudioLeg.consume``)."""

    def hold(self) -> None:
        """Queue events (the leg's bounds on caller frames and digits apply) instead of handing
        them over: the consumer is waiting for something before it can take the next."""
        ...

    def release(self) -> None:
        """Undo one ``hold``; the last one hands the queued events over, in order."""
        ...

    def detach(self) -> None:
        """The consumer is done: nothing more is handed to it."""
        ...


@runtime_checkable
class AudioLeg(Protocol):
    """What the conversation engine needs of a call leg."""

    call_id: str

    def events(self) -> AsyncIterator[LegEvent]:
        """Caller frames, DTMF and playback events, ending with exactly one LegEnded."""
        ...

    def consume(self, consumer: EventConsumer) -> EventFeed:
        """The same events, in the same order, handed to ``consumer`` as the leg produces them,
        in the leg's own call (the media tick, the socket reader): no task is woken per
        event. Instead of ``events()``, not beside it. The feed starts held (``release()``
        once set up). The consumer must not block; it is never called re-entrantly: what the
        leg produces while it runs (a PlaybackStarted from its own ``play()``) is handed over
        after it returns, and while it holds the feed, later events queue behind."""
        ...

    def play(self, utterance_id: str, pcm: bytes) -> None:
        """Queue agent audio (s16le 8 kHz, any length) for paced playback, after what is queued."""
        ...

    def end_utterance(self, utterance_id: str) -> None:
        """No more audio will come for this utterance; PlaybackDone follows once it is heard."""
        ...

    def clear(self) -> None:
        """Drop every queued, unsent frame at once (barge-in); a paused leg plays again."""
        ...

    def pause(self) -> None:
        """Stop the agent's audio now but keep what is queued (caller speech not yet judged)."""
        ...

    def resume(self) -> None:
        """Play on from where ``pause`` stopped: no word repeated, none lost."""
        ...

    def heard_ms(self, utterance_id: str) -> int:
        """How much of an utterance the caller has actually heard (sent / played)."""
        ...

    async def send_dtmf(self, digits: str) -> None: ...

    async def transfer(self, target: str) -> bool:
        """Hand the caller to ``target`` (SIP REFER / Plivo transfer). True if accepted."""
        ...

    async def hangup(self, reason: str = "normal") -> None:
        """The agent is done with the call: the leg ends (LegEnded by ``agent``) and reports
        it; whoever owns the call ends it on the wire."""
        ...


@runtime_checkable
class SupervisedLeg(AudioLeg, Protocol):
    """What a call's supervisor needs of a leg beyond the agent's AudioLeg."""

    def end(self, reason: str, by: EndedBy = "peer") -> None:
        """End the leg now (LegEnded once, media stops); a no-op on an ended leg."""
        ...

    async def finished(self) -> LegEnded:
        """This leg's LegEnded, once it has one (the owner's view; the agent reads events())."""
        ...

    async def close(self, reason: str = "closed") -> None:
        """Release what the leg holds (ends it first if need be); idempotent."""
        ...
