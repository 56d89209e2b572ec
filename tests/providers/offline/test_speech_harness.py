"""The offline tests' caller audio is the same bytes on every run, whatever the test process
spoke before: the in-process espeak-ng is not (its klatt flutter runs on a frame counter no
API resets), which made recognition of the same line differ between full-suite runs."""

from __future__ import annotations

from bridge.providers.tts.espeak_tts import EspeakTTS
from tests.providers.offline import speech


async def test_caller_audio_does_not_depend_on_what_was_spoken_before() -> None:
    line = "In the morning, please."
    first = await speech.say(line)
    tts = EspeakTTS("en-us+klatt", 165)
    spoken = await speech.heard(tts.synthesize(speech.chunks("Hello there. " * 3)))
    assert spoken  # the process's engine has moved on
    # the in-process engine may now give another version of the same line (it usually does,
    # not always: no assertion on it, that would be a coin toss); the harness never does
    speech._spoken.clear()
    assert await speech.say(line) == first
