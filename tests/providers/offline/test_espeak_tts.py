"""espeak-ng TTS in-process: speech of plausible length at its native rate (8 kHz once through
the conversation's ChunkConverter), streamed clause by clause."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from bridge.providers.base import AudioChunk, ProviderError
from bridge.providers.tts import espeak_tts
from bridge.providers.tts.espeak_engine import EXECUTOR, EspeakEngine
from bridge.providers.tts.espeak_tts import EspeakTTS
from bridge.settings import Secrets, Settings
from tests.providers.offline.speech import chunks, heard, rms

SENTENCE = "Thank you for calling. We are open from nine to five, Monday to Friday."  # 14 words


async def collect(tts: EspeakTTS, text: AsyncIterator[str]) -> list[AudioChunk]:
    return [c async for c in tts.synthesize(text)]


async def _items(out: list[AudioChunk]) -> AsyncIterator[AudioChunk]:
    for chunk in out:
        yield chunk


async def pcm8k(out: list[AudioChunk]) -> bytes:
    return await heard(_items(out))


async def test_sentence_gives_8khz_speech_of_plausible_length() -> None:
    tts = espeak_tts.create(Settings(), Secrets())
    out = await collect(tts, chunks(SENTENCE))
    assert len(out) > 10  # streamed in blocks, not one buffer
    # espeak's own rate, declared: the ChunkConverter is the one place that resamples
    rate = EspeakEngine.instance().sample_rate
    assert rate != 8000 and all(c.encoding == "pcm_s16le" and c.sample_rate == rate for c in out)
    assert all(len(c.data) % 2 == 0 and c.data for c in out)
    pcm = await pcm8k(out)
    seconds = len(pcm) / 2 / 8000
    # 14 words at 165 wpm is ~5 s of speech; allow for pauses at the commas
    assert 3.0 < seconds < 8.0
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    loud = energy > 300
    assert loud.mean() > 0.5  # mostly speech ...
    assert (~loud).sum() >= 5  # ... with pauses between phrases (not a constant tone)
    # speech energy sits in the telephone band, mostly below 2 kHz
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    assert spectrum[freqs < 2000].sum() > 0.6 * spectrum.sum()


async def test_rate_setting_changes_duration() -> None:
    slow = await pcm8k(await collect(EspeakTTS("en-us+klatt", 120), chunks(SENTENCE)))
    fast = await pcm8k(await collect(EspeakTTS("en-us+klatt", 260), chunks(SENTENCE)))
    assert len(fast) < 0.7 * len(slow)


async def test_first_audio_before_the_rest_of_the_text_exists() -> None:
    tts = EspeakTTS("en-us+klatt", 165)
    got_audio = asyncio.Event()
    asked_for_more = []

    async def text() -> AsyncIterator[str]:
        yield "Hello there."
        # the LLM is still "thinking": this clause only comes once audio for the first is out
        await got_audio.wait()
        asked_for_more.append(True)
        yield "And here is the rest."

    out: list[AudioChunk] = []

    async def consume() -> None:
        async for chunk in tts.synthesize(text()):
            if not out:
                assert not asked_for_more  # the first audio did not wait for the second clause
                got_audio.set()
            out.append(chunk)

    await asyncio.wait_for(consume(), 30)
    assert asked_for_more and len(out) > 2


async def test_stopping_early_aborts_and_the_engine_keeps_working() -> None:
    tts = EspeakTTS("en-us+klatt", 165)
    long_text = " ".join(["This sentence goes on and on without an end in sight."] * 20)
    stream = tts.synthesize(chunks(long_text))
    first = await anext(stream)
    assert first.data
    await stream.aclose()  # a barge-in: the consumer leaves
    # the engine thread is free again and speaks normally
    out = await collect(tts, chunks("Still here."))
    assert 0.4 < len(await pcm8k(out)) / 2 / 8000 < 2.5


def test_engine_abort_stops_at_the_block() -> None:
    engine = EspeakEngine.instance()
    blocks: list[bytes] = []

    def sink(pcm: bytes) -> bool:
        blocks.append(pcm)
        return len(blocks) < 3

    done = EXECUTOR.submit(engine.synthesize, "A long sentence " * 20, "en-us+klatt", 165, sink).result()
    assert done is False
    assert len(blocks) == 3


async def test_sink_errors_surface_as_provider_error() -> None:
    tts = EspeakTTS("en-us+klatt", 165)
    engine = EspeakEngine.instance()

    def bad_sink(pcm: bytes) -> bool:
        raise ValueError("sink broke")

    with pytest.raises(ValueError, match="sink broke"):
        EXECUTOR.submit(engine.synthesize, "Hello.", "en-us+klatt", 165, bad_sink).result()
    # and through the provider: an unusable voice mid-stream becomes a ProviderError
    tts.voice = "no-such-voice"
    with pytest.raises(ProviderError, match="no-such-voice"):
        await collect(tts, chunks("Hello."))


async def test_blank_and_odd_text_is_harmless() -> None:
    tts = EspeakTTS("en-us+klatt", 165)
    assert await collect(tts, chunks()) == []
    assert await collect(tts, chunks("", "   ", "\n")) == []
    out = await collect(tts, chunks("nul\x00byte <b>tags</b> & emoji 🙂 and ünïcödé."))
    assert len(await pcm8k(out)) > 8000  # it said something


def test_unknown_voice_fails_at_create() -> None:
    settings = Settings.model_validate({"tts": {"espeak_voice": "xx-nonexistent"}})
    with pytest.raises(ProviderError, match="xx-nonexistent"):
        espeak_tts.create(settings, Secrets())


async def test_clauses_are_concatenated_in_order() -> None:
    tts = EspeakTTS("en-us+klatt", 165)
    one = await pcm8k(await collect(tts, chunks("Good morning.")))
    two = await pcm8k(await collect(tts, chunks("Good morning.", "Good morning.")))
    # two clauses take about twice as long as one, and the speech is in both halves
    assert 1.7 < len(two) / len(one) < 2.3
    half = len(two) // 2 & ~1
    assert rms(two[:half]) > 300 and rms(two[half:]) > 300
