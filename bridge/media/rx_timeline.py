"""The caller's audio on the sender's sample timeline: the packet intake shared by the two
receive buffers, which differ only in delivery (jitter_buffer.PlayoutBuffer: one frame a tick
at a playout depth, for a person; listen_buffer.ListenBuffer: every frame as soon as it is
there, for the VAD and STT).

Sans-I/O. ``put`` places decoded audio at its RTP timestamp (unwrapped across the 32-bit
wrap), so any packet time works (10/20/30 ms) and frames always come out as exactly
``frame_samples``; reordered packets wait in their slots, duplicates are dropped, a packet
behind the delivered position is late. A sender's timeline that moved (5 late packets in a
row, or a jump of more than 1 s ahead) is followed: the buffer starts again from it.

The RTP sequence number, when given, is used too (by both deliveries: a person must not
hear a replayed block again any more than a listener may transcribe it twice): a late packet
that is older than the newest one seen (within RFC 3550 A.1's misorder window of 100) is a
delayed or replayed copy, dropped without counting towards that resync, so a stale block is
never delivered again; after a resync, packets numbered before it belong to the timeline that
was left and are dropped, unless their timestamp is within 200 ms before the resync packet's
(the new timeline's first packets, reordered behind it). The first packet after a reset
(hold/resume) begins such an epoch too. A late packet within that window but timed before
the timeline we follow began (and not before a resync or reset) is a sender restarted under
the same SSRC: it counts towards the resync.
"""

from __future__ import annotations

from bisect import bisect_right, insort

from bridge.media.plc import Concealer

_WRAP = 1 << 32
_HALF = 1 << 31
_SEQ_MOD = 1 << 16
_SEQ_HALF = 1 << 15
_MAX_MISORDER = 100  # RFC 3550 A.1: further back than this is a restarted sender, not a stale packet
_LATE_RUN_RESET = 5  # this many late packets in a row: the sender's timeline moved, follow it
_MAX_CHUNKS = 200


class RxTimeline:
    """The intake; a subclass adds the delivery (it moves ``_head`` and takes frames with
    ``_take``). ``_floor``: the last position delivered before a suspension (a paused
    sender), behind which packets are still late."""

    def __init__(
        self,
        frame_samples: int = 160,
        max_conceal_ms: int = 60,
        clock_rate: int = 8000,
        max_depth_samples: int | None = None,
    ) -> None:
        self._frame = frame_samples
        self._rate = clock_rate
        self._max_conceal = max(max_conceal_ms * clock_rate // 1000, frame_samples)
        self._resync_ahead = clock_rate  # a jump of more than 1 s ahead is a new timeline
        # never hold more than this past the head (None: the delivery never holds ready audio)
        self._max_depth = max_depth_samples if max_depth_samples is not None else 1 << 62
        self._starts: list[int] = []
        self._chunks: dict[int, bytes] = {}
        self._end = 0
        self._head: int | None = None
        self._floor: int | None = None
        self._ext: int | None = None
        self._origin = 0  # where the timeline we follow began (its first packet's position)
        self._concealer = Concealer(sample_rate=clock_rate)
        self._conceal_run = 0
        self._late_run = 0
        self._seq_hi: int | None = None  # the newest sequence number seen, unwrapped
        self._seq_epoch: int | None = None  # the first sequence number after a resync
        self._epoch_ts = 0  # and its RTP timestamp
        # reset() forgot a numbered timeline (hold/resume): the first packet after it begins
        # an epoch, as a resync does, so copies of what came before are not a restarted sender
        self._fence = False
        # counters (the leg's stats)
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
    def newest_timestamp(self) -> int | None:
        """The RTP timestamp of the newest audio buffered since the last reset (None: none)."""
        return None if self._ext is None else self._ext & 0xFFFFFFFF

    def reset(self) -> None:
        """Forget the timeline (new sender SSRC, new remote, hold/resume). Packets numbered
        before the first one after it (delayed copies of the stream before the reset) are
        dropped as a resync's old timeline is, not followed as a restarted sender."""
        if self._seq_hi is not None:  # (kept over a reset with nothing between: hold, resume)
            self._fence = True
        self._starts.clear()
        self._chunks.clear()
        self._end = 0
        self._head = None
        self._floor = None
        self._ext = None
        self._conceal_run = 0
        self._late_run = 0
        self._seq_hi = self._seq_epoch = None

    # -- input ---------------------------------------------------------------------------
    def _unwrap(self, timestamp: int) -> int:
        if self._ext is None:
            self._ext = self._origin = timestamp
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
        sequence number (None: judged by the timestamp alone)."""
        samples = len(pcm) // 2
        head = self._head
        hi = self._seq_hi
        ext = self._ext
        if seq is not None and hi is not None and ext is not None and head is not None and samples:
            # The usual packet, once per call every 20 ms: the newest by number and by time,
            # at or after the end of what is buffered, neither late nor a jump. The general
            # path below does the same in that case, with its calls and bookkeeping.
            ds = (seq - hi) & 0xFFFF
            dt = (timestamp - ext) & 0xFFFFFFFF
            if 0 < ds < _SEQ_HALF and 0 < dt < _HALF:
                pos = ext + dt
                if self._end <= pos <= head + self._resync_ahead and pos + samples > head:
                    self._seq_hi = hi + ds
                    self._ext = pos
                    self._late_run = 0
                    starts = self._starts
                    starts.append(pos)
                    # the same object when whole: codec.Passthrough finds a frame by identity
                    self._chunks[pos] = pcm if len(pcm) == samples * 2 else pcm[: samples * 2]
                    self._end = end = pos + samples
                    if len(starts) > _MAX_CHUNKS:
                        self._drop_before(starts[1])
                    if end - head > self._max_depth:
                        self._overfull()
                    return
        if samples == 0:
            return
        if self._fence:  # the first packet after reset(): the epoch begins here
            self._fence = False
            if seq is not None:
                self._seq_hi = self._seq_epoch = seq
                self._epoch_ts = timestamp
        age = self._seq_age(seq) if seq is not None else 0
        if age < 0:
            if not 0 < (self._epoch_ts - timestamp) % _WRAP <= self._rate // 5:
                self.late += 1  # sent before the timeline we follow began
                return
            age = 0  # that timeline's own first packets, reordered behind the one that began it
        pos = self._unwrap(timestamp)
        behind = self._head if self._head is not None else self._floor
        if behind is not None and pos + samples <= behind:
            self.late += 1
            if age and pos >= self._origin:
                # numbered before a packet already seen and timed within the timeline we
                # follow: a stale copy, never a new timeline. One timed before that timeline
                # began is no copy of it: a sender restarted under the same SSRC, renumbered
                # a little behind and retimed back, followed after 5 such packets as before.
                return
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
        # the same object when whole: codec.Passthrough finds a frame by identity
        self._chunks[pos] = pcm if len(pcm) == samples * 2 else pcm[: samples * 2]
        self._end = max(self._end, pos + samples)
        if len(self._starts) > _MAX_CHUNKS:
            self._drop_before(self._starts[1])
        if self._head is not None and self._end - self._head > self._max_depth:
            self._overfull()

    def _resync(self, timestamp: int, seq: int | None) -> None:
        self.resyncs += 1
        self.reset()
        self._fence = False  # (the epoch begins here, below)
        self._ext = self._origin = timestamp
        if seq is not None:
            self._seq_hi = self._seq_epoch = seq  # packets numbered before this one: the old timeline
            self._epoch_ts = timestamp  # unless their timestamp is just before this one's

    # -- for the delivery ------------------------------------------------------------------
    def _take(self, pos: int, need: int) -> tuple[bytes, int]:
        """``need`` samples from ``pos``, gaps concealed; and how many were concealed."""
        chunk = self._chunks.get(pos)
        if chunk is not None and len(chunk) == 2 * need:
            return chunk, 0  # the usual case: one packet is one frame, as it came
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

    def _overfull(self) -> None:
        """More than ``max_depth_samples`` past the head: skip ahead (the delivery may say where)."""
        self._skip_to(self._end - self._max_depth)

    def _skip_to(self, pos: int) -> None:
        """Move the head forward to ``pos`` without delivering what lies before it."""
        assert self._head is not None
        if pos <= self._head:
            return
        self.skipped_frames += (pos - self._head + self._frame - 1) // self._frame
        self._head = pos
        self._drop_before(pos)
