"""Receive statistics counted by the leg itself (RFC 3550 A.3 loss, A.8 jitter).

aiortp resets its statistics when the sender's SSRC changes (re-INVITE, SBC failover); a
call's totals must survive that, so finished SSRC streams are folded into running totals.
"""

from __future__ import annotations

_SEQ_MOD = 1 << 16
_MAX_DROPOUT = 3000
_MAX_MISORDER = 100


class _Stream:
    __slots__ = ("base", "cycles", "jitter", "max_seq", "received", "transit")

    def __init__(self, seq: int) -> None:
        self.base = seq
        self.max_seq = seq
        self.cycles = 0
        self.received = 0
        self.transit: float | None = None
        self.jitter = 0.0  # in RTP clock units

    @property
    def expected(self) -> int:
        return self.cycles + self.max_seq - self.base + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)


class ReceiveStats:
    def __init__(self, clock_rate: int = 8000) -> None:
        self._rate = clock_rate
        self._jump = clock_rate * 10  # a transit change this large is a jump, not jitter
        self._ssrc: int | None = None
        self._stream: _Stream | None = None
        self._done_received = 0
        self._done_lost = 0
        self.ssrc_changes = 0

    def on_packet(self, ssrc: int, seq: int, timestamp: int, arrival_s: float) -> None:
        stream = self._stream
        if stream is not None and seq == stream.max_seq + 1 and ssrc == self._ssrc:
            # the usual packet: the next one of the current SSRC (the first case below)
            stream.received += 1
            stream.max_seq = seq
            transit = arrival_s * self._rate - timestamp
            last = stream.transit
            if last is not None:
                d = abs(transit - last)
                if d < self._jump:
                    stream.jitter += (d - stream.jitter) / 16.0
            stream.transit = transit
            return
        if stream is None or ssrc != self._ssrc:
            if stream is not None:
                self._done_received += stream.received
                self._done_lost += stream.lost
                self.ssrc_changes += 1
            stream = self._stream = _Stream(seq)
            self._ssrc = ssrc
        stream.received += 1
        max_seq = stream.max_seq
        if seq == max_seq + 1:
            stream.max_seq = seq  # the usual packet: the next one, no wrap (the first case below)
        else:
            delta = (seq - max_seq) % _SEQ_MOD
            if 0 < delta < _MAX_DROPOUT:
                if seq < max_seq:
                    stream.cycles += _SEQ_MOD
                stream.max_seq = seq
            elif delta >= _SEQ_MOD - _MAX_MISORDER or delta == 0:
                pass  # reordered or duplicate: counted as received only
            else:
                # A large jump: the sender restarted its sequence; start over (RFC 3550 A.1).
                self._done_received += stream.received - 1
                self._done_lost += stream.lost
                stream = self._stream = _Stream(seq)
                stream.received = 1
        transit = arrival_s * self._rate - timestamp
        last = stream.transit
        if last is not None:
            d = abs(transit - last)
            if d < self._jump:  # ignore timestamp jumps (talkspurts, restarts)
                stream.jitter += (d - stream.jitter) / 16.0
        stream.transit = transit

    @property
    def received(self) -> int:
        return self._done_received + (self._stream.received if self._stream else 0)

    @property
    def lost(self) -> int:
        return self._done_lost + (self._stream.lost if self._stream else 0)

    @property
    def jitter_ms(self) -> float:
        return (self._stream.jitter if self._stream else 0.0) * 1000.0 / self._rate

    @property
    def extended_max_seq(self) -> int:
        s = self._stream
        return (s.cycles + s.max_seq) if s else 0

    @property
    def ssrc(self) -> int | None:
        return self._ssrc
