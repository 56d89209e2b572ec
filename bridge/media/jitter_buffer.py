"""Receive-side jitter buffer: decoded caller audio in, one 20 ms frame per clock tick out.

Sans-I/O. Audio is kept on a sample timeline (the sender's RTP timestamps, unwrapped), so any
packet time works (10/20/30 ms) and frames always come out as exactly ``frame_samples``.
Gaps inside the stream are filled by bridge.media.plc (repeat the last frame, fading out
over 60 ms). A run of concealment with nothing buffered means the sender paused (silence
suppression, DTMF, hold): delivery suspends and re-primes on the next audio.

Depth: delivery starts once ``target_ms`` + one frame is buffered. If the buffer stays deeper
than needed for a whole window (clock drift, a burst), one frame is skipped; packets that
arrive after their slot was played are dropped as late.
"""

from __future__ import annotations

from bisect import bisect_right, insort

from bridge.media.plc import Concealer

_WRAP = 1 << 32
_HALF = 1 << 31
_DRIFT_WINDOW_TICKS = 50  # 1 s at 20 ms
_LATE_RUN_RESET = 5  # this many late packets in a row: the sender's timeline moved, follow it
_MAX_CHUNKS = 200


class PlayoutBuffer:
    def __init__(
        self,
        target_ms: int = 60,
        frame_samples: int = 160,
        max_conceal_ms: int = 60,
        clock_rate: int = 8000,
    ) -> None:
        self._frame = frame_samples
        self._rate = clock_rate
        self._target = target_ms * clock_rate // 1000
        self._max_conceal = max(max_conceal_ms * clock_rate // 1000, frame_samples)
        self._resync_ahead = clock_rate  # a jump of more than 1 s ahead is a new timeline
        self._max_depth = clock_rate  # never hold more than 1 s
        self._starts: list[int] = []
        self._chunks: dict[int, bytes] = {}
        self._end = 0
        self._head: int | None = None
        self._floor: int | None = None  # last position played before a suspension
        self._ext: int | None = None
        self._concealer = Concealer(sample_rate=clock_rate)
        self._conceal_run = 0
        self._late_run = 0
        self._min_depth: int | None = None
        self._window = 0
        # counters
        self.late = 0
        self.duplicates = 0
        self.concealed_frames = 0
        self.skipped_frames = 0
        self.resyncs = 0

    @property
    def primed(self) -> bool:
        return self._head is not None

    @property
    def depth_ms(self) -> float:
        if not self._chunks:
            return 0.0
        start = self._head if self._head is not None else self._starts[0]
        return max(0, self._end - start) * 1000.0 / self._rate

    def reset(self) -> None:
        """Forget the timeline (new sender SSRC, new remote)."""
        self._starts.clear()
        self._chunks.clear()
        self._end = 0
        self._head = None
        self._floor = None
        self._ext = None
        self._conceal_run = 0
        self._late_run = 0
        self._min_depth = None
        self._window = 0

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

    def put(self, timestamp: int, pcm: bytes, seq: int | None = None) -> None:
        """Buffer decoded s16le audio that starts at RTP ``timestamp``. ``seq`` (the RTP
        sequence number) is not used here: a playout buffer judges by timestamp alone."""
        samples = len(pcm) // 2
        if samples == 0:
            return
        pos = self._unwrap(timestamp)
        behind = self._head if self._head is not None else self._floor
        if behind is not None and pos + samples <= behind:
            self.late += 1
            self._late_run += 1
            if self._late_run < _LATE_RUN_RESET:
                return
            self._resync(timestamp)
            pos = self._unwrap(timestamp)
        elif self._head is not None and pos > self._head + self._resync_ahead:
            self._resync(timestamp)
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
            self._skip_to(self._end - self._target - self._frame)

    def _resync(self, timestamp: int) -> None:
        self.resyncs += 1
        self.reset()
        self._ext = timestamp

    # -- output --------------------------------------------------------------------------
    def tick(self) -> bytes | None:
        """The next frame (s16le, ``frame_samples`` long), or None while nothing is playing."""
        head = self._head
        if head is not None:
            starts = self._starts
            chunk = self._chunks.get(head)
            if chunk is not None and starts[0] == head and len(chunk) == 2 * self._frame:
                # The usual case, once per call every 20 ms: the oldest packet is exactly the
                # next frame. The same as the general path below, without its bookkeeping.
                del self._chunks[head]
                starts.pop(0)
                self._head = head = head + self._frame
                if starts and starts[0] < head:
                    self._drop_before(head)
                self._concealer.update(chunk)
                self._conceal_run = 0
                self._track_drift()
                return chunk
        if self._head is None:
            if not self._starts or self._end - self._starts[0] < self._target + self._frame:
                return None
            self._head = self._starts[0]
            self._floor = None
            self._conceal_run = 0
            self._min_depth = None
            self._window = 0
        frame, concealed = self._take(self._head, self._frame)
        self._head += self._frame
        self._drop_before(self._head)
        if concealed:
            self.concealed_frames += 1
            self._conceal_run += concealed
            if not self._starts and self._conceal_run >= self._max_conceal:
                self._suspend()
        else:
            self._concealer.update(frame)
            self._conceal_run = 0
            self._track_drift()
        return frame

    def _take(self, pos: int, need: int) -> tuple[bytes, int]:
        chunk = self._chunks.get(pos)
        if chunk is not None and len(chunk) == 2 * need:
            return chunk, 0  # the usual case: one packet is one frame, played as it came
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

    def _suspend(self) -> None:
        self._floor = self._head
        self._head = None

    def _skip_to(self, pos: int) -> None:
        assert self._head is not None
        if pos <= self._head:
            return
        self.skipped_frames += (pos - self._head + self._frame - 1) // self._frame
        self._head = pos
        self._drop_before(pos)

    def _track_drift(self) -> None:
        assert self._head is not None
        depth = self._end - self._head
        if self._min_depth is None or depth < self._min_depth:
            self._min_depth = depth
        self._window += 1
        if self._window < _DRIFT_WINDOW_TICKS:
            return
        excess = self._min_depth - self._target - self._frame
        if excess > self._frame:
            # Shed half the excess (at least a frame) per window: fast after a burst, gentle for drift.
            frames = max(1, excess // 2 // self._frame)
            self._skip_to(self._head + frames * self._frame)
        self._min_depth = None
        self._window = 0
