"""Receive-side jitter buffer: decoded caller audio in, one 20 ms frame per clock tick out.

Sans-I/O. The packet intake (sample timeline, reorder slots, late packets, resync) is
rx_timeline.RxTimeline; this is its delivery for audio a person hears. Gaps inside the stream
are filled by bridge.media.plc (repeat the last frame, fading out over 60 ms). A run of
concealment with nothing buffered means the sender paused (silence suppression, DTMF, hold):
delivery suspends and re-primes on the next audio.

Depth: delivery starts once ``target_ms`` + one frame is buffered. If the buffer stays deeper
than needed for a whole window (clock drift, a burst), one frame is skipped; packets that
arrive after their slot was played are dropped as late. A late block whose RTP sequence
numbers are behind the newest seen (a delayed or replayed copy) is never followed as a moved
timeline: it is not heard twice (rx_timeline.py).
"""

from __future__ import annotations

from bridge.media.rx_timeline import RxTimeline

_DRIFT_WINDOW_TICKS = 50  # 1 s at 20 ms


class PlayoutBuffer(RxTimeline):
    def __init__(
        self,
        target_ms: int = 60,
        frame_samples: int = 160,
        max_conceal_ms: int = 60,
        clock_rate: int = 8000,
    ) -> None:
        # never hold more than 1 s
        super().__init__(frame_samples, max_conceal_ms, clock_rate, max_depth_samples=clock_rate)
        self._target = target_ms * clock_rate // 1000
        self._min_depth: int | None = None
        self._window = 0

    @property
    def depth_ms(self) -> float:
        if not self._chunks:
            return 0.0
        start = self._head if self._head is not None else self._starts[0]
        return max(0, self._end - start) * 1000.0 / self._rate

    def reset(self) -> None:
        """Forget the timeline (new sender SSRC, new remote)."""
        super().reset()
        self._min_depth = None
        self._window = 0

    def _overfull(self) -> None:
        self._skip_to(self._end - self._target - self._frame)

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
                concealer = self._concealer  # Concealer.update(chunk) inline
                concealer._history = chunk
                concealer._elapsed = 0
                self._conceal_run = 0
                # _track_drift's usual case inline: the window is not over yet
                depth = self._end - head
                low = self._min_depth
                if low is None or depth < low:
                    self._min_depth = depth
                window = self._window + 1
                if window < _DRIFT_WINDOW_TICKS:
                    self._window = window
                else:
                    self._window = window
                    self._end_window()
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

    def _suspend(self) -> None:
        self._floor = self._head
        self._head = None

    def _track_drift(self) -> None:
        assert self._head is not None
        depth = self._end - self._head
        if self._min_depth is None or depth < self._min_depth:
            self._min_depth = depth
        self._window += 1
        if self._window >= _DRIFT_WINDOW_TICKS:
            self._end_window()

    def _end_window(self) -> None:
        assert self._head is not None and self._min_depth is not None
        excess = self._min_depth - self._target - self._frame
        if excess > self._frame:
            # Shed half the excess (at least a frame) per window: fast after a burst, gentle for drift.
            frames = max(1, excess // 2 // self._frame)
            self._skip_to(self._head + frames * self._frame)
        self._min_depth = None
        self._window = 0
