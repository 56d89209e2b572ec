"""Send-side playback queue: agent audio in, exactly one 20 ms frame per clock tick out.

Sans-I/O. Utterances are cut into frames of exactly ``frame_samples`` (a partial tail waits
for more audio, or is padded with silence by ``end``), queued in call order, and accounted:
PlaybackStarted at the first frame, PlaybackProgress every ``progress_every`` frames,
PlaybackDone after the last frame of an ended utterance. ``heard_ms`` counts only audio that
went on the wire (not padding, not frames consumed while the caller has us on hold).
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from bridge.leg import LegEvent, PlaybackDone, PlaybackProgress, PlaybackStarted

log = logging.getLogger(__name__)

_MAX_UTTERANCES = 256


def _progress(utterance_id: str, heard_ms: int, t: float) -> PlaybackProgress:
    """PlaybackProgress(utterance_id, heard_ms, t), made every 5th frame of every call: set
    through its slots, without the frozen dataclass's __init__ (a Python call that sets each
    field through object.__setattr__)."""
    event = _new_progress(PlaybackProgress)
    _set_utterance_id(event, utterance_id)
    _set_heard_ms(event, heard_ms)
    _set_t(event, t)
    return event


_new_progress = PlaybackProgress.__new__
_set_utterance_id = PlaybackProgress.utterance_id.__set__  # type: ignore[attr-defined,misc]
_set_heard_ms = PlaybackProgress.heard_ms.__set__  # type: ignore[attr-defined,misc]
_set_t = PlaybackProgress.t.__set__  # type: ignore[attr-defined,misc]


@dataclass(slots=True)
class _Utterance:
    id: str
    carry: bytes = b""
    frames_out: int = 0
    sent_samples: int = 0
    started: bool = False
    ended: bool = False
    cancelled: bool = False
    done: bool = False


# A queue item: (utterance, pcm, samples in its last frame). ``pcm`` is a whole number of
# frames, cut lazily at send time (so play() costs O(1) whatever its length); ``None`` marks
# the end of the utterance.
_Item = tuple[_Utterance, bytes | None, int]


class PlaybackQueue:
    def __init__(
        self,
        emit: Callable[[LegEvent], None],
        frame_samples: int = 160,
        clock_rate: int = 8000,
        progress_every: int = 5,
    ) -> None:
        self._emit = emit
        self._frame_samples = frame_samples
        self._frame_bytes = frame_samples * 2
        self._rate = clock_rate
        self._progress_every = progress_every
        self._items: deque[_Item] = deque()
        self._offset = 0  # bytes of the head item already sent
        self._utts: OrderedDict[str, _Utterance] = OrderedDict()
        self._queued_frames = 0
        self._last: _Utterance | None = None  # play()'s utterance last time (one in _utts)
        self._usual = True  # the usual-frame paths of play/next_frame (False: tests' reference)

    @property
    def queued_ms(self) -> int:
        return self._queued_frames * self._frame_samples * 1000 // self._rate

    def __bool__(self) -> bool:
        return bool(self._items)

    def _utterance(self, utterance_id: str) -> _Utterance:
        utt = self._utts.get(utterance_id)
        if utt is None:
            utt = self._utts[utterance_id] = _Utterance(utterance_id)
            while len(self._utts) > _MAX_UTTERANCES:
                if self._utts.popitem(last=False)[1] is self._last:
                    self._last = None  # forgotten: a play() of that id starts a new one
        return utt

    def play(self, utterance_id: str, pcm: bytes) -> None:
        utt = self._last
        if utt is not None and self._usual and utt.id == utterance_id and not utt.carry \
                and not utt.cancelled and not utt.ended and len(pcm) == self._frame_bytes:
            # The usual call (the echo agent's, every 20 ms): one whole frame to the utterance
            # played last. The same as below without its lookup and cuts.
            self._items.append((utt, pcm, self._frame_samples))
            self._queued_frames += 1
            return
        utt = self._last = self._utterance(utterance_id)
        if utt.cancelled:
            return  # cleared by barge-in: late audio of that reply must not play
        if utt.ended:
            log.warning("audio for utterance %r after end_utterance ignored", utterance_id)
            return
        data = utt.carry + pcm if utt.carry else pcm
        full = len(data) // self._frame_bytes
        if full:
            cut = full * self._frame_bytes
            self._items.append((utt, data[:cut] if cut < len(data) else data, self._frame_samples))
            self._queued_frames += full
        utt.carry = data[full * self._frame_bytes :]

    def end(self, utterance_id: str) -> None:
        utt = self._utterance(utterance_id)
        if utt.cancelled or utt.ended:
            return
        utt.ended = True
        carry = utt.carry[: len(utt.carry) // 2 * 2]
        utt.carry = b""
        if carry:
            padded = carry + bytes(self._frame_bytes - len(carry))
            self._items.append((utt, padded, len(carry) // 2))
            self._queued_frames += 1
        self._items.append((utt, None, 0))

    def clear(self) -> None:
        """Drop every queued frame; every utterance not yet done is cancelled."""
        self._items.clear()
        self._offset = 0
        self._queued_frames = 0
        for utt in self._utts.values():
            if not utt.done:
                utt.cancelled = True
                utt.carry = b""

    def report_progress(self, t: float) -> None:
        """PlaybackProgress now for every utterance that started and is not done: the exact
        heard position when sending stops (pause, clear), which the periodic reports can miss
        by up to ``progress_every`` frames; the history cut on barge-in is taken from it."""
        for utt in self._utts.values():
            if utt.started and not utt.done and not utt.cancelled:
                self._emit(PlaybackProgress(utt.id, self.heard_ms(utt.id), t))

    def heard_ms(self, utterance_id: str) -> int:
        utt = self._utts.get(utterance_id)
        return 0 if utt is None else utt.sent_samples * 1000 // self._rate

    def next_frame(self, t: float, audible: bool) -> bytes | None:
        """Take the frame for this tick (None: nothing queued). ``audible`` False: the frame
        is consumed at real time but not sent (caller holds us), so it is not heard."""
        items = self._items
        if not items:
            return None
        utt, chunk, last_real = items[0]
        if chunk is not None and not self._offset and len(chunk) == self._frame_bytes and utt.started \
                and self._usual:
            # The usual frame: a whole-frame item of a started utterance. The same as below
            # without its cuts and checks.
            items.popleft()
            self._queued_frames -= 1
            frames_out = utt.frames_out = utt.frames_out + 1
            if audible:
                utt.sent_samples += last_real
            if not frames_out % self._progress_every:
                self._emit(_progress(utt.id, self.heard_ms(utt.id), t))
            if items and items[0][1] is None:
                self._finish_ended(t)
            return chunk
        if chunk is None:
            self._finish_ended(t)
            if not items:
                return None
        utt, chunk, last_real = self._items[0]
        assert chunk is not None
        start = self._offset
        end = start + self._frame_bytes
        pcm = chunk[start:end] if start or end < len(chunk) else chunk
        if end >= len(chunk):
            self._items.popleft()
            self._offset = 0
            real = last_real
        else:
            self._offset = end
            real = self._frame_samples
        self._queued_frames -= 1
        utt.frames_out += 1
        if audible:
            utt.sent_samples += real
        if not utt.started:
            utt.started = True
            self._emit(PlaybackStarted(utt.id, t))
        if utt.frames_out % self._progress_every == 0:
            self._emit(PlaybackProgress(utt.id, self.heard_ms(utt.id), t))
        if items and items[0][1] is None:
            self._finish_ended(t)
        return pcm

    def _finish_ended(self, t: float) -> None:
        items = self._items
        while items and items[0][1] is None:
            utt = items.popleft()[0]
            utt.done = True
            self._emit(PlaybackDone(utt.id, self.heard_ms(utt.id), t))
