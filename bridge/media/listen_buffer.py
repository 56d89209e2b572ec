"""Receive buffer for a machine listener (the conversation agent's VAD and STT): each 20 ms
frame as soon as it and every frame before it have come, with no playout depth.

A playout buffer (jitter_buffer.py) holds ``target_ms`` of audio so that a late packet still
makes its slot on a steady cadence: right for audio a person hears, but every caller frame
then reaches the VAD that much late, and the barge-in pause with it (60-100 ms measured on
the wire, bench/barge_in_wire.py). A listener needs the frames in order and gaps filled, not a
cadence: here a missing frame (a lost or reordered packet) is waited for until audio
``max_wait_ms`` past it has come, or for ``max_wait_ms`` of ticks with nothing new, and only
then concealed (bridge.media.plc); a packet after that is late and dropped. A run of
concealment with nothing buffered means the sender paused (silence suppression, DTMF,
hold): delivery suspends and restarts at the next audio. Sans-I/O; the packet intake is
rx_timeline.RxTimeline (the same as PlayoutBuffer's, the RTP sequence number telling a stale
packet, never delivered twice, from a sender's moved timeline); ``frames()`` once per clock
tick.
"""

from __future__ import annotations

from bisect import bisect_right

from bridge.media.rx_timeline import RxTimeline

_MAX_FRAMES_PER_TICK = 50  # a burst after a stall comes out at once, within reason


class ListenBuffer(RxTimeline):
    def __init__(
        self,
        max_wait_ms: int = 60,
        frame_samples: int = 160,
        max_conceal_ms: int = 60,
        clock_rate: int = 8000,
    ) -> None:
        super().__init__(frame_samples, max_conceal_ms, clock_rate)
        self._wait = max(max_wait_ms * clock_rate // 1000, 0)
        self._wait_ticks = -(-self._wait // frame_samples)  # ticks with nothing new before concealing
        self._stalled = 0  # ticks the head frame has been missing

    @property
    def depth_ms(self) -> float:
        if not self._chunks or self._head is None:
            return 0.0
        return max(0, self._end - self._head) * 1000.0 / self._rate

    def reset(self) -> None:
        """Forget the timeline (new sender SSRC, new remote)."""
        super().reset()
        self._stalled = 0

    # -- output --------------------------------------------------------------------------
    def frames(self) -> list[bytes]:
        """The frames ready this tick (s16le, ``frame_samples`` each), in order; often one,
        none while a missing frame is waited for or the sender is paused."""
        if self._head is None:
            if not self._starts:
                return []
            self._head = self._starts[0]
            self._floor = None
            self._conceal_run = 0
            self._stalled = 0
        out: list[bytes] = []
        whole = 2 * self._frame
        while len(out) < _MAX_FRAMES_PER_TICK and self._head is not None:
            head = self._head
            chunk = self._chunks.get(head)
            if chunk is not None and len(chunk) == whole:
                # the usual case: one packet is the whole frame (what _have and _take find)
                frame = chunk
                self._concealer.update(frame)
                self._conceal_run = 0
                self._stalled = 0
            elif self._have(head):
                frame, _ = self._take(head, self._frame)
                self._concealer.update(frame)
                self._conceal_run = 0
                self._stalled = 0
            elif self._end - head >= self._wait + self._frame:
                frame, concealed = self._take(head, self._frame)  # later audio came: this packet is lost
                self.concealed_frames += 1
                self._conceal_run += concealed
            elif not out and self._stalled + 1 >= self._wait_ticks:
                # nothing new for max_wait_ms: conceal, one frame a tick, until audio comes
                self._stalled += 1
                frame, concealed = self._take(head, self._frame)
                self.concealed_frames += 1
                self._conceal_run += concealed
            else:
                if not out:
                    self._stalled += 1
                break
            out.append(frame)
            self._head = head + self._frame
            self._drop_before(self._head)
            if self._conceal_run and not self._starts and self._conceal_run >= self._max_conceal:
                self._floor, self._head = self._head, None  # the sender paused: suspend
            elif self._conceal_run and not self._starts:
                break  # concealing a silent sender: one frame a tick keeps time moving
        return out

    def _have(self, pos: int) -> bool:
        """Every sample of the frame at ``pos`` has come."""
        i = bisect_right(self._starts, pos) - 1
        need = self._frame
        while need > 0 and 0 <= i < len(self._starts):
            start = self._starts[i]
            avail = start + len(self._chunks[start]) // 2 - pos
            if start > pos or avail <= 0:
                return False
            take = min(need, avail)
            pos += take
            need -= take
            i += 1
        return need <= 0
