"""Frame levels for the echo guard and the level gate (echo.py): exact RMS, computed per frame
or for a whole TTS chunk at once with the same values."""

from __future__ import annotations

import itertools
import math
import random
import struct

from bridge.conversation.echo import AgentLevels, frame_rms, frames_rms
from bridge.leg import FRAME_BYTES


def _exact_rms(pcm: bytes) -> float:
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm[: len(pcm) // 2 * 2])
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


def _noise(rng: random.Random, frames: int, amplitude: int) -> bytes:
    n = frames * 160
    return struct.pack(f"<{n}h", *(rng.randint(-amplitude, amplitude) for _ in range(n)))


def test_frame_rms_is_the_exact_root_mean_square() -> None:
    rng = random.Random(7)
    for amplitude in (0, 1, 300, 8000, 32767):
        pcm = _noise(rng, 1, amplitude)
        assert frame_rms(pcm) == _exact_rms(pcm)
    full_scale = struct.pack("<160h", *([-32768] * 160))
    assert frame_rms(full_scale) == 32768.0
    assert frame_rms(b"") == 0.0
    assert frame_rms(b"\x01") == 0.0  # half a sample is no audio


def test_frames_rms_gives_each_whole_frame_and_ignores_a_partial_tail() -> None:
    rng = random.Random(3)
    pcm = _noise(rng, 5, 12000) + b"\x10\x20\x30"
    levels = frames_rms(pcm)
    assert levels == [frame_rms(pcm[i : i + FRAME_BYTES]) for i in range(0, 5 * FRAME_BYTES, FRAME_BYTES)]
    assert frames_rms(pcm[: FRAME_BYTES - 1]) == []


def test_agent_levels_do_not_depend_on_how_the_audio_was_cut() -> None:
    rng = random.Random(11)
    pcm = _noise(rng, 12, 9000)
    whole = AgentLevels()
    whole.add(pcm)
    pieces = AgentLevels()
    cuts = [0, 1, 7, 320, 333, 900, 1601, 2880, len(pcm)]
    for a, b in itertools.pairwise(cuts):
        pieces.add(pcm[a:b])
    assert pieces.levels == whole.levels
    assert len(whole.levels) == 12
    assert whole.levels == [_exact_rms(pcm[i : i + FRAME_BYTES]) for i in range(0, len(pcm), FRAME_BYTES)]
