"""The hot-path G.711 (bit-exact with bridge.audio.g711) and the vectorised concealer."""

from __future__ import annotations

import numpy as np

from bridge.audio import g711
from bridge.media.codec import DECODERS, ENCODERS
from bridge.media.plc import Concealer


def test_decoders_match_the_reference_for_every_code() -> None:
    every = bytes(range(256))
    assert DECODERS[0](every) == g711.ulaw_to_pcm(every)
    assert DECODERS[8](every) == g711.alaw_to_pcm(every)


def test_encoders_match_the_reference_for_every_sample() -> None:
    every = np.arange(-32768, 32768, dtype="<i2").tobytes()
    assert ENCODERS["PCMU"](every) == g711.pcm_to_ulaw(every)
    assert ENCODERS["PCMA"](every) == g711.pcm_to_alaw(every)
    assert ENCODERS["PCMU"](b"\x01\x02\x03") == g711.pcm_to_ulaw(b"\x01\x02")  # odd byte ignored


def test_concealment_repeats_then_fades_to_silence() -> None:
    plc = Concealer(sample_rate=8000, fade_ms=60)
    assert plc.conceal(160) == bytes(320)  # nothing heard yet: silence
    frame = np.full(160, 10000, dtype="<i2")
    plc.update(frame.tobytes())
    out = np.frombuffer(plc.conceal(480 + 160), dtype="<i2")
    assert out[0] == 10000  # starts at the last frame's level
    assert np.all(np.diff(out[:480].astype(int)) <= 0)  # fades monotonically
    assert 0 < out[240] < 10000 and out[479] < 100
    assert not out[480:].any()  # then silence: the timeline is kept, nothing synthetic
    plc.update(frame.tobytes())  # a good frame restarts the fade
    assert np.frombuffer(plc.conceal(1), dtype="<i2")[0] == 10000
