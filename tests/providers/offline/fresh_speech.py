"""``python -m tests.providers.offline.fresh_speech VOICE RATE TEXT``: TEXT as 8 kHz s16le on
stdout, spoken by a libespeak-ng that has synthesised nothing before.

Why a process of its own: libespeak-ng's klatt generator keeps a frame counter in a static
variable (``time_count`` in klatt.c's ``flutter()``) that no API resets, and the pitch flutter
it drives repeats every 20 frames. So in a process that has already spoken, the same text
comes out in one of 20 different versions, depending on how many frames were synthesised
before (other tests, the agent's replies, barge-ins that abort at a timing-dependent block).
A fresh library gives each caller line one version on every run.
"""

from __future__ import annotations

import sys

from bridge.audio.resample import StreamResampler
from bridge.providers.tts.espeak_engine import EspeakEngine


def main(voice: str, rate_wpm: int, text: str) -> bytes:
    engine = EspeakEngine.instance()
    resampler = StreamResampler(engine.sample_rate, 8000)
    out: list[bytes] = []

    def sink(pcm: bytes) -> bool:
        out.append(resampler.push(pcm))
        return True

    engine.synthesize(text, voice, rate_wpm, sink)
    out.append(resampler.flush())
    return b"".join(out)


if __name__ == "__main__":
    sys.stdout.buffer.write(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
