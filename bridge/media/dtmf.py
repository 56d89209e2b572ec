"""RFC 4733 DTMF, sans-I/O: telephone-events received -> digits; digits -> events to send.

Receive: an event is reported once, at its first end packet (the sender repeats the end
packet three times; all share the event's RTP timestamp). If every end packet is lost, the
event is reported when the next event starts or when no packet of it came for a while.

Send: one event per digit, each with its own RTP timestamp (the media clock's position when
the digit starts), a packet per 20 ms tick with a growing duration, then the end packet on
three consecutive ticks, then a pause. With no telephone-event payload type negotiated, the
same schedule produces in-band dual-tone audio instead.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from aiortp import DtmfEvent
from aiortp.dtmf import DTMF_EVENTS, EVENT_TO_DIGIT

DIGITS = frozenset(DTMF_EVENTS)
_TONES: dict[str, tuple[float, float]] = {}
for _row, _low in zip(("123A", "456B", "789C", "*0#D"), (697.0, 770.0, 852.0, 941.0), strict=True):
    for _key, _high in zip(_row, (1209.0, 1336.0, 1477.0, 1633.0), strict=True):
        _TONES[_key] = (_low, _high)

_END_REPEATS = 3
_VOLUME = 10  # -10 dBm0


def normalize_digits(digits: str) -> str:
    """Upper-cased digits; raises ValueError naming the first character that is no DTMF key."""
    for ch in digits:
        if ch.upper() not in DIGITS:
            raise ValueError(f"not a DTMF digit: {ch!r} (use 0-9, *, #, A-D)")
    return digits.upper()


class DtmfReceiver:
    def __init__(self, clock_rate: int = 8000, expire_s: float = 0.5) -> None:
        self._rate = clock_rate
        self._expire_s = expire_s
        self._key: tuple[int, int, int] | None = None  # (ssrc, timestamp, event code)
        self._digit = ""
        self._duration = 0
        self._reported = True
        self._last_seen = 0.0

    def on_packet(self, ssrc: int, timestamp: int, payload: bytes, now: float) -> list[tuple[str, int]]:
        """Digits (digit, duration_ms) completed by this telephone-event packet."""
        try:
            event = DtmfEvent.parse(payload)
        except ValueError:
            return []
        digit = EVENT_TO_DIGIT.get(event.event)
        if digit is None:
            return []  # flash-hook and other events: not a digit
        out: list[tuple[str, int]] = []
        key = (ssrc, timestamp, event.event)
        # A new event: new timestamp or key; or a sender that reuses one timestamp for several
        # digits (aiortp's send_digit does) restarting after an end with a shorter duration.
        restarted = key == self._key and self._reported and not event.end and event.duration < self._duration
        if key != self._key or restarted:
            out += self._flush()
            self._key = key
            self._digit = digit
            self._reported = False
            self._duration = 0
        self._last_seen = now
        self._duration = max(self._duration, event.duration)
        if event.end and not self._reported:
            out += self._flush()
        return out

    def on_straggler(self, ssrc: int, timestamp: int, payload: bytes, now: float) -> list[tuple[str, int]]:
        """A packet of the SSRC the caller's stream just left (RtpLeg._straggler): it may
        still go on with or end the event in progress (a gateway that sends events under an
        SSRC of their own), never start one (an old digit's reordered end packet, after a
        fail-over, must not cut the new stream's digit short nor be reported again)."""
        if not payload or self._key != (ssrc, timestamp, payload[0]):
            return []
        return self.on_packet(ssrc, timestamp, payload, now)

    def expire(self, now: float) -> list[tuple[str, int]]:
        """Report an event whose end packets never came (call this from a clock)."""
        if not self._reported and now - self._last_seen >= self._expire_s:
            return self._flush()
        return []

    def _flush(self) -> list[tuple[str, int]]:
        if self._reported or not self._digit:
            return []
        self._reported = True
        return [(self._digit, self._duration * 1000 // self._rate)]


@dataclass(slots=True)
class _Job:
    digits: str
    duration: int  # samples
    gap_ticks: int
    token: object


@dataclass(slots=True)
class DtmfTick:
    """What the sender does on one tick: event packets (payload, marker, timestamp), or one
    frame of in-band tone, or nothing; ``busy`` keeps agent audio paused; ``finished`` holds
    the tokens of jobs completed on this tick."""

    packets: list[tuple[bytes, bool, int]]
    tone: bytes | None
    busy: bool
    finished: list[object]


class DtmfSender:
    def __init__(self, frame_samples: int = 160, clock_rate: int = 8000) -> None:
        self._frame = frame_samples
        self._rate = clock_rate
        self._jobs: deque[_Job] = deque()
        self._index = 0  # digit within the current job
        self._phase = "idle"  # idle | tone | end | gap
        self._elapsed = 0  # samples into the current digit
        self._event_ts = 0
        self._count = 0  # packets (tone phase) / end repeats / gap ticks so far

    @property
    def busy(self) -> bool:
        return bool(self._jobs)

    def add(self, digits: str, duration_ms: int, gap_ms: int, token: object) -> None:
        duration = max(self._frame, duration_ms * self._rate // 1000)
        gap_ticks = max(1, gap_ms * self._rate // 1000 // self._frame)
        self._jobs.append(_Job(normalize_digits(digits), duration, gap_ticks, token))

    def cancel_all(self) -> list[object]:
        tokens = [job.token for job in self._jobs]
        self._jobs.clear()
        self._phase = "idle"
        return tokens

    def tick(self, media_ts: int, inband: bool) -> DtmfTick:
        """Advance one frame; ``media_ts`` is the RTP timestamp this tick stands for."""
        result = DtmfTick([], None, bool(self._jobs), [])
        if not self._jobs:
            return result
        job = self._jobs[0]
        if self._phase == "idle":
            self._phase, self._elapsed, self._count, self._event_ts = "tone", 0, 0, media_ts
        digit = job.digits[self._index]
        code = DTMF_EVENTS[digit]
        if self._phase == "tone":
            self._elapsed += self._frame
            if inband:
                result.tone = _tone(digit, self._elapsed - self._frame, self._frame, self._rate)
            else:
                end = self._elapsed >= job.duration
                duration = min(self._elapsed, job.duration)
                payload = DtmfEvent(code, end, _VOLUME, duration).serialize()
                result.packets.append((payload, self._count == 0, self._event_ts))
            self._count += 1
            if self._elapsed >= job.duration:
                self._phase, self._count = ("gap", 0) if inband else ("end", 1)
        elif self._phase == "end":
            payload = DtmfEvent(code, True, _VOLUME, min(self._elapsed, job.duration)).serialize()
            result.packets.append((payload, False, self._event_ts))
            self._count += 1
            if self._count >= _END_REPEATS:
                self._phase, self._count = "gap", 0
        else:  # gap: silence between digits (and after the last one)
            self._count += 1
            if self._count >= job.gap_ticks:
                self._phase = "idle"
                self._index += 1
                if self._index >= len(job.digits):
                    self._jobs.popleft()
                    self._index = 0
                    result.finished.append(job.token)
        return result


def _tone(digit: str, start: int, samples: int, rate: int) -> bytes:
    low, high = _TONES[digit]
    t = (np.arange(samples) + start) / rate
    wave = 7000.0 * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t))
    return wave.astype("<i2").tobytes()
