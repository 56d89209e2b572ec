"""G.711 on the per-packet hot path, using bridge.audio.g711's tables (bit-exact with them).

Decoding one 160-byte payload with two ``bytes.translate`` passes (low/high byte of each
sample) costs about half of a numpy gather; encoding uses ``ndarray.take``, a little cheaper
than fancy indexing. No audioop.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bridge.audio import g711


def _tables(table: np.ndarray) -> tuple[bytes, bytes]:
    """bytes.translate tables of the low and the high byte of each code's s16le sample."""
    as_bytes = table.astype("<i2").view(np.uint8)
    return bytes(as_bytes[0::2]), bytes(as_bytes[1::2])


_TABLES = {0: _tables(g711.ULAW_DECODE), 8: _tables(g711.ALAW_DECODE)}


def _decoder(table: np.ndarray) -> Callable[[bytes], bytes]:
    low, high = _tables(table)

    def decode(payload: bytes) -> bytes:
        out = bytearray(2 * len(payload))
        out[0::2] = payload.translate(low)
        out[1::2] = payload.translate(high)
        return bytes(out)

    return decode


def _encoder(table: np.ndarray) -> Callable[[bytes], bytes]:
    lut = np.ascontiguousarray(table, dtype=np.uint8)

    def encode(pcm: bytes) -> bytes:
        samples = np.frombuffer(pcm, dtype="<u2", count=len(pcm) // 2)
        return lut.take(samples).tobytes()

    return encode


DECODERS: dict[int, Callable[[bytes], bytes]] = {0: _decoder(g711.ULAW_DECODE), 8: _decoder(g711.ALAW_DECODE)}
_DECODE_ULAW = DECODERS[0]


def decode_ulaw_keeping(payload: bytes) -> g711.UlawPcm:
    """PCMU to PCM that keeps the payload (g711.UlawPcm): for a listener whose STT takes mu-law
    (Deepgram), which then sends the caller's bytes as received instead of encoding them again.
    Not for the echo path: each such frame is a GC-tracked object (see Passthrough)."""
    pcm = g711.UlawPcm(_DECODE_ULAW(payload))
    pcm.ulaw = payload
    return pcm


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "PCMU": _encoder(g711.ULAW_ENCODE),
    "PCMA": _encoder(g711.ALAW_ENCODE),
}


class Passthrough:
    """The payloads of the frames decoded lately, by frame: a frame sent back out in the codec
    it came in (the echo agent) goes out as the caller's payload, neither encoded again (~5 us
    a frame here) nor changed (G.711 has two codes for zero).

    Keyed by the frame object's id, which is unique while the object lives: each generation
    holds its frames alive as long as its keys. Two generations of ``depth`` frames, the older
    dropped whole when the newer is full: every frame is known for at least ``depth`` frames
    after it came, at a dict store and a list append per frame. Plain ints and bytes, no new
    object per frame: a bytes subclass carrying its payload (as g711.UlawPcm does) is a
    GC-tracked object with a __dict__ that outlives the young generation, and at 500 calls
    those frames tripled the cyclic GC's work."""

    __slots__ = ("_depth", "_new", "_new_frames", "_old", "_old_frames")

    def __init__(self, depth: int = 25) -> None:
        self._depth = depth
        self._new: dict[int, bytes] = {}
        self._new_frames: list[bytes] = []
        self._old: dict[int, bytes] = {}
        self._old_frames: list[bytes] = []

    def keep(self, pcm: bytes, payload: bytes) -> None:
        new = self._new
        if len(new) >= self._depth:
            self._old, self._old_frames = new, self._new_frames
            self._new = new = {}
            self._new_frames = []
        new[id(pcm)] = payload
        self._new_frames.append(pcm)

    def decoder(self, payload_type: int) -> Callable[[bytes], bytes]:
        """DECODERS[payload_type] and ``keep`` in one call: the receive path's usual packet
        (once per call every 20 ms) decodes its payload and keeps it."""
        low, high = _TABLES[payload_type]
        depth = self._depth

        def decode_keeping(payload: bytes) -> bytes:
            out = bytearray(2 * len(payload))
            out[0::2] = payload.translate(low)
            out[1::2] = payload.translate(high)
            pcm = bytes(out)
            new = self._new
            if len(new) >= depth:
                self._old, self._old_frames = new, self._new_frames
                self._new = new = {}
                self._new_frames = []
            new[id(pcm)] = payload
            self._new_frames.append(pcm)
            return pcm

        return decode_keeping

    def payload_of(self, pcm: bytes) -> bytes | None:
        """The payload ``pcm`` was decoded from, if it is one of the kept frames."""
        key = id(pcm)
        payload = self._new.get(key)
        return self._old.get(key) if payload is None else payload

    def clear(self) -> None:
        self._new, self._new_frames, self._old, self._old_frames = {}, [], {}, []
