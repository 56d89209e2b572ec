"""The audio Deepgram has not yet covered with a final result, kept for replay on reconnect.

Final results carry ``start`` + ``duration`` in the connection's audio time; a new connection
starts its clock at zero, so the buffer also maps connection time to stream time.
"""

from __future__ import annotations

MAX_SECONDS = 60.0  # a caller who never pauses still cannot grow this without bound


class ReplayBuffer:
    def __init__(self, sample_rate: int, sample_bytes: int) -> None:
        self.sample_bytes = sample_bytes
        self.bytes_per_second = sample_rate * sample_bytes
        self._data = bytearray()
        self._start_s = 0.0  # stream time of _data[0]
        self.connection_offset_s = 0.0  # stream time at which the current connection's clock began

    def append(self, audio: bytes) -> None:
        self._data += audio
        excess = len(self._data) - int(MAX_SECONDS * self.bytes_per_second)
        if excess > 0:
            self._drop(excess + (-excess % self.sample_bytes))

    def finalized(self, conn_start_s: float, conn_duration_s: float) -> None:
        """A final result covered the connection's audio up to start + duration."""
        end_s = self.connection_offset_s + conn_start_s + conn_duration_s
        samples = round((end_s - self._start_s) * self.bytes_per_second / self.sample_bytes)
        if samples > 0:
            self._drop(min(samples * self.sample_bytes, len(self._data)))

    def reconnected(self) -> bytes:
        """A new connection: its clock starts where the unfinalized audio starts; replay that."""
        self.connection_offset_s = self._start_s
        return bytes(self._data)

    @property
    def end_s(self) -> float:
        """Stream time of the end of the audio kept (where audio appended now begins)."""
        return self._start_s + len(self._data) / self.bytes_per_second

    @property
    def pending_s(self) -> float:
        return len(self._data) / self.bytes_per_second

    def _drop(self, n: int) -> None:
        del self._data[:n]
        self._start_s += n / self.bytes_per_second
