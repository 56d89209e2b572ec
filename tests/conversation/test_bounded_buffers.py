"""What a call keeps must not grow with its length: the echo guard's per-utterance positions
and a VAD's silero state stay the same size however many replies and windows a call has."""

from __future__ import annotations

import asyncio

import numpy as np

from bridge.conversation.echo import AgentLevels, EchoGuard
from bridge.conversation.vad import SileroVad
from bridge.leg import FRAME_BYTES


def _tone(level: int, frames: int) -> bytes:
    t = np.arange(frames * FRAME_BYTES // 2) / 8000
    return (level * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


def test_echo_guard_keeps_a_few_utterances_however_many_were_played() -> None:
    guard = EchoGuard(return_loss_db=6, tail_ms=200)
    now = 0.0
    for n in range(500):  # a long call: 500 replies
        levels = AgentLevels()
        levels.add(_tone(8000, 10))
        now += 1.0
        guard.played(now, f"reply-{n}", levels, heard_ms=200)
    assert len(guard._pos) <= 8
    # still guards against the reply playing now: its echo (6 dB down or more) is echo,
    # a caller louder than the agent is not
    assert guard.is_echo(now, 8000 / np.sqrt(2) / 4)
    assert not guard.is_echo(now, 8000.0)


def test_silero_state_does_not_grow_with_the_windows_a_call_had() -> None:
    vad = SileroVad()
    speech = _tone(6000, 1) * 3 + bytes(FRAME_BYTES) * 2

    def size() -> int:
        stream = vad._model
        return int(stream._input.nbytes + stream._state.nbytes + vad._pending.nbytes)

    async def talk(frames: int) -> None:
        for i in range(frames):
            await vad.speech(speech[(i % 5) * FRAME_BYTES : (i % 5 + 1) * FRAME_BYTES])

    asyncio.run(talk(50))
    first = size()
    asyncio.run(talk(2000))  # 40 s more of a call
    assert size() == first < 4096
