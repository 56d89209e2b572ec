"""G.711 decoding (the byte-table form) is the decode table itself, for every code, and the
encoder inverts it: a mu-law or A-law byte survives decode + encode unchanged."""

from __future__ import annotations

import numpy as np

from bridge.audio import g711


def test_every_code_decodes_to_its_table_entry() -> None:
    codes = bytes(range(256))
    assert g711.ulaw_to_pcm(codes) == g711.ULAW_DECODE.astype("<i2").tobytes()
    assert g711.alaw_to_pcm(codes) == g711.ALAW_DECODE.astype("<i2").tobytes()
    assert np.frombuffer(g711.ulaw_to_pcm(b"\x00\xff"), "<i2").tolist() == [-32124, 0]


def test_bytes_like_input_and_empty() -> None:
    frame = bytes(range(0, 256, 2))
    decoded = g711.ulaw_to_pcm(frame)
    assert g711.ulaw_to_pcm(memoryview(frame)) == g711.ulaw_to_pcm(bytearray(frame)) == decoded
    assert g711.ulaw_to_pcm(b"") == b"" and g711.alaw_to_pcm(b"") == b""


def test_decode_then_encode_gives_the_code_back() -> None:
    codes = bytes(c for c in range(256) if c != 0x7F)  # 0x7F and 0xFF both decode to 0
    assert g711.pcm_to_ulaw(g711.ulaw_to_pcm(codes)) == codes
    assert g711.pcm_to_alaw(g711.alaw_to_pcm(bytes(range(256)))) == bytes(range(256))


def test_pcm_that_kept_its_mulaw_gives_it_back_unchanged() -> None:
    wire = bytes([0x7F, 0x00, 0x80] * 10)  # 0x7F decodes to 0, which encodes as 0xFF
    pcm = g711.ulaw_to_pcm_keeping(wire)
    assert pcm == g711.ulaw_to_pcm(wire)  # plain PCM to everyone else
    assert g711.as_ulaw(pcm) == wire  # the caller's own bytes, not a re-encoding
    assert g711.as_ulaw(bytes(pcm)) == g711.pcm_to_ulaw(pcm) != wire  # plain bytes are encoded
    assert type(pcm[:4]) is bytes and type(b"".join([pcm, pcm])) is bytes
