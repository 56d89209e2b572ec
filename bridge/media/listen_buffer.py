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
hold): delivery suspends and restarts at the next audio. Sans-I/O, same input as
PlayoutBuffer (decoded audio at RTP timestamps, and the RTP sequence number); ``frames()``
once per clock tick.

Stale audio is never delivered twice: a packet behind the delivered position whose sequence
number is older than the newest one seen (a delayed or replayed block, RFC 3550 A.1 keeps
within 100 packets as misorder) is dropped without counting towards the late-run resync, so
only a sender whose timestamps moved back while its sequence numbers went on is followed; and
after a resync, packets numbered before it belong to the timeline that was left.
"""

from __future__ import annotations

from bisect import bisect_right, insort

from bridge.media.plc import Concealer

_WRAP = 1 << 32
_HALF = 1 << 31
_LATE_RUN_RESET = 5  # this many late packets in a row: the sender's timeline moved, follow it
_MAX_CHUNKS = 200
_MAX_FRAMES_PER_TICK = 50  # a burst after a stall comes out at once, within reason
_SEQ_MOD = 1 << 16
_SEQ_HALF = 1 << 15
_MAX_MISORDER = 100  # RFC 3550 A.1: further back than this is a restarted sender, not a stale packet


class ListenBuffer:
    def __init__(
        self,
        max_wait_ms: int = 60,
        frame_samples: int = 160,
        max_conceal_ms: int = 60,
        clock_rate: int = 8000,
    ) -> None:
        self._frame = frame_samples
        self._rate = clock_rate
        self._wait = max(max_wait_ms * clock_rate // 1000, 0)
        self._wait_ticks = -(-self._wait // frame_samples)  # ticks with nothing new before concealing
        self._max_conceal = max(max_conceal_ms * clock_rate // 1000, frame_samples)
        self._resync_ahead = clock_rate  # a jump of more than 1 s ahead is a new timeline
        self._starts: list[int] = []
        self._chunks: dict[int, bytes] = {}
        self._end = 0
        self._head: int | None = None
        self._floor: int | None = None  # last position delivered before a suspension
        self._ext: int | None = None
        self._concealer = Concealer(sample_rate=clock_rate)
        self._conceal_run = 0
        self._stalled = 0  # ticks the head frame has been missing
        self._late_run = 0
        self._seq_hi: int | None = None  # the newest sequence number seen, unwrapped
        self._seq_epoch: int | None = None  # the first sequence number after a resync
        # counters (the same as PlayoutBuffer's, for the leg's stats)
        self.late = 0
        self.duplicates = 0
        self.concealed_frames = 0
        self.skipped_frames = 0
        self.resyncs = 0

    @property
    def primed(self) -> bool:
        """Delivering (not before the first audio, nor suspended after the sender paused)."""
        return self._head is not None

    @property
    def depth_ms(self) -> float:
        if not self._chunks or self._head is None:
            return 0.0
        return max(0, self._end - self._head) * 1000.0 / self._rate

    def reset(self) -> None:
        """Forget the timeline (new sender SSRC, new remote)."""
        self._starts.clear()
        self._chunks.clear()
        self._end = 0
        self._head = None
        self._floor = None
        self._ext = None
        self._conceal_run = 0
        self._stalled = 0
        self._late_run = 0
        self._seq_hi = self._seq_epoch = None

    # -- input ---------------------------------------------------------------------------
    def _unwrap(self, timestamp: int) -> int:
        if self._ext is None:
            self._ext = timestamp
            return timestamp
        delta = ((timestamp - self._ext) + _HALF) % _WRAP - _HALF
        pos = self._ext + delta
        if delta > 0:
            self._ext = pos
        return pos

    def _seq_age(self, seq: int) -> int:
        """How many packets before the newest seen ``seq`` was sent (0: it is the newest);
        -1 when it is older than the current timeline (sent before the last resync)."""
        hi = self._seq_hi
        if hi is None:
            self._seq_hi = seq
            return 0
        delta = ((seq - hi) + _SEQ_HALF) % _SEQ_MOD - _SEQ_HALF
        if delta >= 0:
            self._seq_hi = hi + delta
            return 0
        if -delta > _MAX_MISORDER:
            return 0  # far behind: the sender restarted its numbering, judge by timestamp alone
        epoch = self._seq_epoch
        return -1 if epoch is not None and hi + delta < epoch else -delta

    def put(self, timestamp: int, pcm: bytes, seq: int | None = None) -> None:
        """Buffer decoded s16le audio that starts at RTP ``timestamp``; ``seq``: its RTP
        sequence number, which tells a stale packet from a sender's moved timeline."""
        samples = len(pcm) // 2
        if samples == 0:
            return
        age = 0 if seq is None else self._seq_age(seq)
        if age < 0:
            self.late += 1  # sent before the timeline we follow began
            return
        pos = self._unwrap(timestamp)
        behind = self._head if self._head is not None else self._floor
        if behind is not None and pos + samples <= behind:
            self.late += 1
            if age:
                return  # an older packet than one already seen: stale, never a new timeline
            self._late_run += 1
            if self._late_run < _LATE_RUN_RESET:
                return
            self._resync(timestamp, seq)
            pos = self._unwrap(timestamp)
        elif self._head is not None and pos > self._head + self._resync_ahead:
            self._resync(timestamp, seq)
            pos = self._unwrap(timestamp)
        self._late_run = 0
        if pos in self._chunks:
            self.duplicates += 1
            return
        insort(self._starts, pos)
        self._chunks[pos] = pcm[: samples * 2]
        self._end = max(self._end, pos + samples)
        if len(self._starts) > _MAX_CHUNKS:
            self._drop_before(self._starts[1])

    def _resync(self, timestamp: int, seq: int | None) -> None:
        self.resyncs += 1
        self.reset()
        self._ext = timestamp
        if seq is not None:
            self._seq_hi = self._seq_epoch = seq  # packets numbered before this one are the old timeline

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
        while len(out) < _MAX_FRAMES_PER_TICK and self._head is not None:
            head = self._head
            if self._have(head):
                frame, _ = self._take(head)
                self._concealer.update(frame)
                self._conceal_run = 0
                self._stalled = 0
            elif self._end - head >= self._wait + self._frame:
                frame, concealed = self._take(head)  # later audio came: this packet is lost
                self.concealed_frames += 1
                self._conceal_run += concealed
            elif not out and self._stalled + 1 >= self._wait_ticks:
                # nothing new for max_wait_ms: conceal, one frame a tick, until audio comes
                self._stalled += 1
                frame, concealed = self._take(head)
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

    def _take(self, pos: int) -> tuple[bytes, int]:
        need = self._frame
        chunk = self._chunks.get(pos)
        if chunk is not None and len(chunk) == 2 * need:
            return chunk, 0  # the usual case: one packet is one frame
        out = bytearray()
        concealed = 0
        starts = self._starts
        while need > 0:
            i = bisect_right(starts, pos) - 1
            if i >= 0:
                start = starts[i]
                chunk = self._chunks[start]
                offset = pos - start
                avail = len(chunk) // 2 - offset
                if avail > 0:
                    k = min(need, avail)
                    out += chunk[offset * 2 : (offset + k) * 2]
                    pos += k
                    need -= k
                    continue
            gap = need if i + 1 >= len(starts) else min(need, starts[i + 1] - pos)
            out += self._concealer.conceal(gap)
            concealed += gap
            pos += gap
            need -= gap
        return bytes(out), concealed

    def _drop_before(self, pos: int) -> None:
        starts = self._starts
        while starts and starts[0] + len(self._chunks[starts[0]]) // 2 <= pos:
            del self._chunks[starts.pop(0)]
