"""The caller's speech onset (the engine's verdict going from silence to speech) asks the LLM
the next turn uses for a second warm-up (llm.warmup_on_speech, llm/warm.py): once per onset,
not per frame, only when the provider says one is due, and never when the setting is off."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge.conversation.driver import Conversation
from bridge.conversation.transcript import TranscriptWriter
from bridge.conversation.vad import Later
from bridge.leg import FRAME_BYTES
from bridge.providers.factory import ProviderSet
from bridge.providers.llm import warm
from devkit.manual_clock import ManualClock
from devkit.memory_leg import MemoryLeg
from tests.conversation.fakes import FakeLLM, FakeSTT, FakeTTS
from tests.conversation.harness import FALLBACK
from tests.conversation.test_driver import INFO, answers, settings_for
from tests.conversation.test_driver_feed import settle

_LOUD = 0x0101  # the first sample of a frame the VAD below calls speech


def frame(loud: bool) -> bytes:
    """20 ms of a 400 Hz tone at -12 dBFS (speech for the VAD below) or of silence."""
    if not loud:
        return bytes(FRAME_BYTES)
    samples = [round(8000 * math.sin(2 * math.pi * 400 * n / 8000)) for n in range(FRAME_BYTES // 2)]
    samples[0] = _LOUD
    return b"".join(s.to_bytes(2, "little", signed=True) for s in samples)


class LoudVad:
    """Speech exactly on the frames ``frame(True)`` makes."""

    def is_speech(self, pcm: bytes) -> bool:
        return int.from_bytes(pcm[:2], "little") == _LOUD

    async def speech(self, pcm: bytes) -> bool:
        return self.is_speech(pcm)

    def speech_now(self, pcm: bytes, later: Later) -> bool | None:
        return self.is_speech(pcm)


class WarmableLLM(FakeLLM):
    """FakeLLM with a network engine's warm-up interface: counts the warm-ups it is asked for."""

    def __init__(self, due: bool) -> None:
        super().__init__(answers())
        self.due = due
        self.asked = 0  # warmup_due() calls
        self.warmups = 0

    def warmup_due(self) -> bool:
        self.asked += 1
        return self.due

    async def warmup(self) -> None:
        self.warmups += 1


async def _talk(tmp_path: Path, llms: Sequence[FakeLLM], pattern: str, enabled: bool = True) -> None:
    """Greeting played, then the caller's frames: ``pattern`` is '1' (speech) / '0' a frame."""
    clock = ManualClock()
    leg = MemoryLeg("call-1", clock)
    settings = settings_for(tmp_path)
    llm_settings = settings.llm.model_copy(update={"warmup_on_speech": enabled})
    settings = settings.model_copy(update={"llm": llm_settings})
    providers = ProviderSet([FakeSTT(["are you open"])], list(llms), [FakeTTS()])
    writer = TranscriptWriter.for_call(settings, INFO)
    conv = Conversation(leg, providers, settings, transcript=writer, call_info=INFO,
                        fallback_audio=FALLBACK, clock=clock, vad=LoudVad())
    task = asyncio.create_task(conv.run())
    try:
        await settle()
        for bit in pattern:
            leg.say(frame(bit == "1"))
            leg.step()
            clock.advance(0.020)
            await settle(3)
        await asyncio.gather(*list(warm._running))
    finally:
        await leg.remote_hangup("bye")
        await asyncio.wait_for(task, 5)
        writer.close()


@pytest.mark.parametrize("due", [True, False])
async def test_each_speech_onset_asks_once_and_warms_only_when_due(tmp_path: Path, due: bool) -> None:
    llm, spare = WarmableLLM(due), WarmableLLM(True)
    # two onsets: 10 frames of speech, a pause, 5 more
    await _talk(tmp_path, [llm, spare], "0000" + "1" * 10 + "0" * 6 + "1" * 5 + "000")
    assert llm.asked == 2
    assert llm.warmups == (2 if due else 0)
    assert spare.asked == 0 and spare.warmups == 0  # only the LLM the next turn uses


async def test_no_onset_warm_up_when_the_setting_is_off(tmp_path: Path) -> None:
    llm = WarmableLLM(True)
    await _talk(tmp_path, [llm], "00" + "1" * 10 + "000", enabled=False)
    assert llm.asked == 0 and llm.warmups == 0


def test_the_onset_warm_up_is_on_by_default() -> None:
    assert settings_for(Path("/tmp")).llm.warmup_on_speech
