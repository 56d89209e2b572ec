"""Send-side planning for the stream leg (sans-I/O): which agent audio goes out as the next
playAudio, when, and what the caller has heard according to Plivo's playedStream.

Plivo buffers whatever it is sent, so we keep at most ``lead_ms`` of audio ahead of real time
at Plivo (fast barge-in, never a burst of seconds). Each chunk carries audio of one utterance
only and is followed by a checkpoint; playedStream(name) then says the caller heard everything
up to that checkpoint, the only "heard" figure Plivo gives (its granularity is ``chunk_ms``).
A pause (clearAudio) reports the position by the pacing clock instead, a frame on the safe
side: it is what the caller will have heard when the clearAudio lands.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from bridge.leg import LegEvent, PlaybackDone, PlaybackProgress, PlaybackStarted

_MAX_UTTERANCES = 256
# Below this much audio buffered at Plivo we send whatever we have rather than wait for a
# full chunk (keeps first-audio latency and streaming TTS from underrunning).
LOW_WATER_S = 0.04


@dataclass(slots=True)
class _Utterance:
    id: str
    pending: bytearray
    sent_bytes: int = 0
    heard_bytes: int = 0
    started: bool = False
    ended: bool = False
    cancelled: bool = False
    done: bool = False
    last_checkpoint: str = ""


@dataclass(frozen=True, slots=True)
class Chunk:
    utterance_id: str
    pcm: bytes  # s16le 8 kHz
    checkpoint: str


@dataclass(frozen=True, slots=True)
class _Mark:
    utt: _Utterance
    heard_bytes: int  # the utterance's audio heard once this checkpoint is played
    pcm: bytes  # the chunk itself: a pause takes its unplayed part back to send again


class Playout:
    def __init__(
        self,
        emit: Callable[[LegEvent], None],
        chunk_ms: int = 100,
        lead_ms: int = 200,
        rate: int = 8000,
    ) -> None:
        self._emit = emit
        self._bytes_per_s = rate * 2
        self._chunk_bytes = max(2, rate * 2 * chunk_ms // 1000) & ~1
        self._lead_s = lead_ms / 1000
        self._order: deque[_Utterance] = deque()  # utterances with audio still to send
        self._utts: OrderedDict[str, _Utterance] = OrderedDict()
        self._marks: OrderedDict[str, _Mark] = OrderedDict()  # sent, not yet played
        self._names = itertools.count(1)
        self._play_end = 0.0  # when Plivo's buffer will have played out, as far as we know
        self._paused = False

    # --- engine side -------------------------------------------------------------------

    def play(self, utterance_id: str, pcm: bytes) -> None:
        utt = self._utterance(utterance_id)
        if utt.cancelled or utt.ended or not pcm:
            return
        if not utt.pending:
            self._order.append(utt)
        utt.pending += pcm

    def end(self, utterance_id: str, now: float) -> None:
        utt = self._utterance(utterance_id)
        if utt.cancelled or utt.ended:
            return
        utt.ended = True
        if len(utt.pending) % 2:
            del utt.pending[-1:]
            if not utt.pending:
                self._order.remove(utt)
        self._maybe_done(utt, now)

    def clear(self, now: float) -> bool:
        """Drop all unsent audio and cancel every unfinished utterance. True if Plivo may still
        hold audio of ours (so a clearAudio must go out)."""
        for utt in self._utts.values():
            if not utt.done:
                utt.cancelled = True
                utt.pending.clear()
        self._order.clear()
        self._play_end = now
        self._paused = False
        return bool(self._marks)

    def pause(self, now: float) -> bool:
        """Stop at once but keep the audio: what Plivo holds unplayed (by the pacing clock:
        it plays each chunk from when we sent it) goes back in front of its utterance, to be
        sent again by ``resume``. True if a clearAudio must go out."""
        self._paused = True
        # One 20 ms frame more than the clock says: Plivo plays whole frames, and the caller
        # must never be counted as having heard audio they did not (a frame may repeat).
        margin = self._bytes_per_s // 50
        buffered = self._play_end - now
        unplayed = (int(buffered * self._bytes_per_s) + margin) & ~1 if buffered > 0 else 0
        marks = list(self._marks.values())
        for mark in reversed(marks):
            if unplayed <= 0:
                break
            utt = mark.utt
            take = min(unplayed, len(mark.pcm)) & ~1
            unplayed -= take
            if utt.cancelled or take == 0:
                continue
            utt.pending[0:0] = mark.pcm[len(mark.pcm) - take:]
            utt.sent_bytes -= take
        order: list[_Utterance] = []
        for mark in marks:
            utt = mark.utt
            if utt.sent_bytes > utt.heard_bytes:
                # Played by the clock: Plivo starts a chunk a one-way delay after we sent it,
                # and our clearAudio stops it a one-way delay after now, so the clock's
                # position is what the caller will have heard, give or take the network's
                # jitter. Reported now, as the RTP leg does, one frame more on the safe side
                # (never words the caller did not hear): a confirmed barge-in cuts the history
                # here, not at the last playedStream (up to a chunk and a round trip short).
                confirmed, utt.heard_bytes = utt.heard_bytes, utt.sent_bytes
                if not utt.cancelled:
                    report = max(confirmed, utt.sent_bytes - margin) * 1000 // self._bytes_per_s
                    self._emit(PlaybackProgress(utt.id, report, now))
            if utt.pending and not utt.cancelled and utt not in order:
                order.append(utt)
        order += [u for u in self._order if u not in order]
        self._order = deque(order)
        self._marks.clear()  # their playedStream (if any comes) says nothing new now
        self._play_end = now
        return bool(marks)

    def resume(self, now: float) -> None:
        self._paused = False
        self._play_end = max(self._play_end, now)

    def heard_ms(self, utterance_id: str) -> int:
        utt = self._utts.get(utterance_id)
        return 0 if utt is None else utt.heard_bytes * 1000 // self._bytes_per_s

    @property
    def idle(self) -> bool:
        return not self._order

    # --- sender side -------------------------------------------------------------------

    def next_chunk(self, now: float) -> Chunk | float | None:
        """A chunk to send now, else seconds to wait before asking again, else None (nothing
        to send until play() is called)."""
        if not self._order or self._paused:
            return None
        buffered = self._play_end - now
        if buffered > self._lead_s + 1e-6:  # float slack: exactly at the lead is in time
            return buffered - self._lead_s
        utt = self._order[0]
        if len(utt.pending) < self._chunk_bytes and not utt.ended and buffered > LOW_WATER_S:
            return buffered - LOW_WATER_S  # a full chunk may still come before Plivo runs dry
        take = min(len(utt.pending), self._chunk_bytes) & ~1
        if take == 0:  # a lone odd byte of an open utterance: wait for its other half
            return None
        pcm = bytes(utt.pending[:take])
        del utt.pending[:take]
        if not utt.pending:
            self._order.popleft()
        utt.sent_bytes += take
        name = f"vb{next(self._names)}"
        self._marks[name] = _Mark(utt, utt.sent_bytes, pcm)
        utt.last_checkpoint = name
        self._play_end = max(self._play_end, now) + take / self._bytes_per_s
        if not utt.started:
            utt.started = True
            self._emit(PlaybackStarted(utt.id, now))
        return Chunk(utt.id, pcm, name)

    # --- Plivo side --------------------------------------------------------------------

    def played(self, name: str, now: float) -> None:
        """playedStream: everything sent before checkpoint ``name`` has been played."""
        if name not in self._marks:
            return  # unknown or already confirmed: nothing new
        touched: list[_Utterance] = []
        while self._marks:
            key, mark = self._marks.popitem(last=False)
            if mark.heard_bytes > mark.utt.heard_bytes:
                mark.utt.heard_bytes = mark.heard_bytes
            if mark.utt not in touched:
                touched.append(mark.utt)
            if key == name:
                break
        for utt in touched:
            if not utt.done and not utt.cancelled:
                self._emit(PlaybackProgress(utt.id, self.heard_ms(utt.id), now))
                self._maybe_done(utt, now)

    def cleared(self) -> None:
        """clearedAudio: Plivo dropped its buffer; checkpoints of cancelled audio never come."""
        for key in [k for k, m in self._marks.items() if m.utt.cancelled]:
            del self._marks[key]

    # --- internals ---------------------------------------------------------------------

    def _utterance(self, utterance_id: str) -> _Utterance:
        utt = self._utts.get(utterance_id)
        if utt is None:
            utt = self._utts[utterance_id] = _Utterance(utterance_id, bytearray())
            while len(self._utts) > _MAX_UTTERANCES:
                self._utts.popitem(last=False)
        return utt

    def _maybe_done(self, utt: _Utterance, now: float) -> None:
        if utt.done or utt.cancelled or not utt.ended or utt.pending:
            return
        if utt.last_checkpoint in self._marks:
            return  # its last chunk is not confirmed played yet
        utt.done = True
        self._emit(PlaybackDone(utt.id, self.heard_ms(utt.id), now))
