"""G.711 on the per-packet hot path, using bridge.audio.g711's tables (bit-exact with them).

Decoding one 160-byte payload with two ``bytes.translate`` passes (low/high byte of each
sample) costs about half of a numpy gather; encoding uses ``ndarray.take``, a little cheaper
than fancy indexing. No audioop.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bridge.audio import g711


def _decoder(table: np.ndarray) -> Callable[[bytes], bytes]:
    as_bytes = table.astype("<i2").view(np.uint8)
    low, high = bytes(as_bytes[0::2]), bytes(as_bytes[1::2])

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
ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "PCMU": _encoder(g711.ULAW_ENCODE),
    "PCMA": _encoder(g711.ALAW_ENCODE),
}
