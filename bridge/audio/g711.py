"""G.711 mu-law and A-law with numpy lookup tables (bit-exact with ITU G.711 / audioop).

No ``audioop``: it is gone in Python 3.13. Decoding is a 256-entry table, applied as two
``bytes.translate`` passes (the low and the high byte of each sample) interleaved into one
buffer: ~1.6x faster than a numpy gather on a 20 ms frame, where numpy's per-call overhead is
most of the cost. Encoding is a 65536-entry table indexed by the 16-bit sample (numpy gather).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

_BIAS = 0x84


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


def _ulaw_encode_scalar(sample: int) -> int:
    # Same steps as audioop.lin2ulaw (14-bit magnitude, bias 33, clip 8159), so bit-exact.
    pcm = sample >> 2
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, 8159) + 33
    seg_end = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
    seg = 0
    while seg < 8 and pcm > seg_end[seg]:
        seg += 1
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0x0F)) ^ mask


def _alaw_encode_scalar(sample: int) -> int:
    # audioop.lin2alaw works on the top 13 bits
    pcm = sample >> 3
    if pcm >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm = -pcm - 1
    seg_end = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
    seg = 0
    while seg < 8 and pcm > seg_end[seg]:
        seg += 1
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (pcm >> 1) & 0x0F if seg < 2 else (pcm >> seg) & 0x0F
    return aval ^ mask


ULAW_DECODE = _ulaw_decode_table()
ALAW_DECODE = _alaw_decode_table()
# Index by (sample & 0xFFFF): the uint16 view of an int16 sample.
_samples = np.arange(65536, dtype=np.int32)
_samples = np.where(_samples >= 32768, _samples - 65536, _samples)
ULAW_ENCODE = np.array([_ulaw_encode_scalar(int(s)) for s in _samples], dtype=np.uint8)
ALAW_ENCODE = np.array([_alaw_encode_scalar(int(s)) for s in _samples], dtype=np.uint8)
del _samples


def _byte_tables(table: npt.NDArray[np.int16]) -> tuple[bytes, bytes]:
    """(low bytes, high bytes) of each code's s16le sample, as bytes.translate tables."""
    raw = table.astype("<i2").tobytes()
    return raw[0::2], raw[1::2]


_ULAW_LO, _ULAW_HI = _byte_tables(ULAW_DECODE)
_ALAW_LO, _ALAW_HI = _byte_tables(ALAW_DECODE)


def _decode(data: bytes, low: bytes, high: bytes) -> bytes:
    data = bytes(data)  # a memoryview or bytearray too (bytes(b) is b itself: no copy)
    out = bytearray(2 * len(data))
    out[0::2] = data.translate(low)
    out[1::2] = data.translate(high)
    return bytes(out)


def ulaw_to_pcm(data: bytes) -> bytes:
    return _decode(data, _ULAW_LO, _ULAW_HI)


def alaw_to_pcm(data: bytes) -> bytes:
    return _decode(data, _ALAW_LO, _ALAW_HI)


class UlawPcm(bytes):
    """s16le PCM decoded from mu-law that keeps the mu-law it came from (``ulaw``): a consumer
    that needs mu-law again (Deepgram, fed the caller's own codec) sends those bytes instead of
    encoding the PCM back. Everyone else sees plain bytes; a slice or a join is plain bytes."""

    ulaw: bytes


def ulaw_to_pcm_keeping(data: bytes) -> UlawPcm:
    pcm = UlawPcm(ulaw_to_pcm(data))
    pcm.ulaw = bytes(data)
    return pcm


def as_ulaw(pcm: bytes) -> bytes:
    """mu-law for ``pcm``: the bytes it was decoded from when it kept them, else encoded."""
    if type(pcm) is UlawPcm and len(pcm.ulaw) * 2 == len(pcm):
        return pcm.ulaw
    return pcm_to_ulaw(pcm)


def pcm_to_ulaw(pcm: bytes) -> bytes:
    return ULAW_ENCODE[np.frombuffer(pcm, dtype="<u2")].tobytes()


def pcm_to_alaw(pcm: bytes) -> bytes:
    return ALAW_ENCODE[np.frombuffer(pcm, dtype="<u2")].tobytes()


def decoder(codec: str) -> Callable[[bytes], bytes]:
    """PCMU/PCMA -> the function turning its payload into s16le PCM."""
    return {"PCMU": ulaw_to_pcm, "PCMA": alaw_to_pcm}[codec.upper()]


def encoder(codec: str) -> Callable[[bytes], bytes]:
    return {"PCMU": pcm_to_ulaw, "PCMA": pcm_to_alaw}[codec.upper()]
