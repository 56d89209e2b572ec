"""Caller audio to the STT in chunks (stt_feed.py, driver.py): held until a chunk is full, and
released at once at the end of speech and with a finalize, so chunking adds no wait to the
final transcript."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge.audio.g711 import as_ulaw, pcm_to_ulaw, ulaw_to_pcm_keeping
from bridge.conversation import run_conversation
from bridge.conversation.stt_feed import SttFeed, join_frames
from bridge.conversation.vad import FrameVad, Later
from bridge.leg import FRAME_BYTES
from bridge.providers.factory import ProviderSet
from bridge.settings import Settings
from devkit.manual_clock import ManualClock
from devkit.memory_leg import MemoryLeg
from tests.conversation.fakes import FakeLLM, FakeSTT, FakeSttStream, FakeTTS
from tests.conversation.harness import FALLBACK, SILENCE, tone
from tests.conversation.test_driver import INFO, Call, answers

LOUD = tone(8000)


def frame(n: int) -> bytes:
    return bytes([n]) * FRAME_BYTES


def test_frames_wait_for_a_whole_chunk() -> None:
    feed = SttFeed(80)
    assert [feed.audio(frame(i)) for i in range(3)] == [False, False, False]
    assert feed.take() == []
    assert feed.audio(frame(3))
    assert feed.take() == [(frame(0) + frame(1) + frame(2) + frame(3), False)]
    assert not feed.ready and len(feed) == 0


def test_twenty_ms_sends_every_frame() -> None:
    feed = SttFeed(20)
    assert feed.audio(frame(1))
    assert feed.take() == [(frame(1), False)]


def test_finalize_goes_at_once_after_the_audio_it_finalizes() -> None:
    feed = SttFeed(200)
    feed.audio(frame(1))
    feed.audio(frame(2))
    assert feed.finalize()
    feed.audio(frame(3))  # after the finalize: it must not be sent before it
    assert feed.take() == [(frame(1) + frame(2), True), (frame(3), False)]


def test_flush_releases_a_partial_chunk() -> None:
    feed = SttFeed(200)
    assert not feed.flush()  # nothing held: nothing to wake the sender for
    feed.audio(frame(1))
    assert feed.flush()
    assert feed.take() == [(frame(1), False)]


def test_joined_plivo_frames_keep_the_callers_mulaw() -> None:
    ulaw = pcm_to_ulaw(LOUD) + bytes([0x7F]) * 160  # 0x7F: silence that would re-encode as 0xFF
    frames = [ulaw_to_pcm_keeping(ulaw[i : i + 160]) for i in range(0, len(ulaw), 160)]
    joined = join_frames(frames)
    assert joined == b"".join(frames)
    assert as_ulaw(joined) == ulaw  # the caller's bytes, not a re-encoding
    mixed = join_frames([frames[0], bytes(frames[1])])  # one plain frame: plain bytes, encoded
    assert as_ulaw(mixed) == pcm_to_ulaw(b"".join(frames))


class LevelVad:
    """Speech when the frame is loud: the test knows exactly where speech ends."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.last_speech = -1.0

    def is_speech(self, pcm: bytes) -> bool:
        return pcm != SILENCE

    def speech_now(self, pcm: bytes, later: Later) -> bool | None:
        loud = self.is_speech(pcm)
        if loud:
            self.last_speech = self.clock.now()
        return loud

    async def speech(self, pcm: bytes) -> bool:
        return bool(self.speech_now(pcm, lambda _: None))


class RecordingSTT(FakeSTT):
    """FakeSTT whose streams note when each byte of audio was sent."""

    def __init__(self, texts: list[str], clock: ManualClock) -> None:
        super().__init__(texts)
        self.clock = clock
        self.sends: list[tuple[float, int]] = []  # (clock time, loud frames sent so far)
        self.sizes: list[tuple[float, int]] = []  # (clock time, bytes in that send)
        self.finalize_at: list[float] = []
        self.loud = 0

    async def open(self) -> FakeSttStream:
        stream = await super().open()
        send, finalize = stream.send, stream.finalize

        async def recording_send(pcm: bytes) -> None:
            self.loud += sum(pcm[i : i + FRAME_BYTES] == LOUD for i in range(0, len(pcm), FRAME_BYTES))
            self.sends.append((self.clock.now(), self.loud))
            self.sizes.append((self.clock.now(), len(pcm)))
            await send(pcm)

        async def recording_finalize() -> None:
            self.finalize_at.append(self.clock.now())
            await finalize()

        stream.send = recording_send  # type: ignore[method-assign]
        stream.finalize = recording_finalize  # type: ignore[method-assign]
        return stream


class LevelVadCall(Call):
    def __init__(self, tmp_path: Path, providers: ProviderSet, leg: MemoryLeg, vad: FrameVad) -> None:
        super().__init__(tmp_path, providers, leg)
        self.vad = vad

    async def __aenter__(self) -> LevelVadCall:
        self.task = asyncio.create_task(run_conversation(
            self.leg, self.providers, self.settings, transcript=self.writer, call_info=INFO,
            fallback_audio=FALLBACK, clock=self.leg.clock, vad=self.vad,
        ))
        return self


async def test_the_end_of_speech_reaches_the_stt_at_once_not_a_chunk_later(tmp_path: Path) -> None:
    """With 240 ms chunks, the last frames of speech go the moment the VAD sees the speech
    end, not when the chunk would fill (or the Finalize, one endpoint window later), and the
    silence after it goes frame by frame."""
    clock = ManualClock()
    stt = RecordingSTT(["are you open"], clock)
    providers = ProviderSet([stt], [FakeLLM(answers())], [FakeTTS()])
    vad = LevelVad(clock)
    call = LevelVadCall(tmp_path, providers, MemoryLeg("call-1", clock), vad)
    call.settings = Settings.model_validate({**call.settings.model_dump(), "stt": {"send_chunk_ms": 240}})
    async with call:
        await call.leg.run_for(1.5)  # the greeting
        call.leg.say(LOUD * 26)  # 520 ms of speech: 26 frames, not a whole number of chunks
        await call.until(lambda: bool(stt.finalize_at), 3.0)
        speech_end = vad.last_speech
        assert speech_end > 0
        # the first send holding every speech frame
        at = next(t for t, loud in stt.sends if loud >= 26)
        assert at <= speech_end + 0.04, (at, speech_end)  # the first silent frame flushed it
        assert at < stt.finalize_at[0]
        # and the speech went in chunks, not frame by frame (26 sends)
        assert len([t for t, _ in stt.sends if t <= at]) <= 26 // 4
        # the silence after it (what an STT such as Flux times its end of turn on) goes frame
        # by frame, each in its own 20 ms tick, until the turn is finalized
        after = [(t, n) for t, n in stt.sizes if at < t < stt.finalize_at[0]]
        assert len(after) >= 5
        assert all(n == FRAME_BYTES for _, n in after)
        assert len({round(t, 3) for t, _ in after}) == len(after)


QUIET = tone(20)  # -67 dBFS: the VAD calls it speech, the level gate's -50 dBFS floor does not


class QuietIsSpeechVad(LevelVad):
    """Any sound is speech (a TV, a line hiss a real VAD takes for a voice); notes when the
    caller's own (loud) speech last came."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.last_loud = -1.0

    def speech_now(self, pcm: bytes, later: Later) -> bool | None:
        if pcm == LOUD:
            self.last_loud = self.clock.now()
        return super().speech_now(pcm, later)


async def test_audio_the_engine_calls_silence_goes_frame_by_frame(tmp_path: Path) -> None:
    """Debt (DESIGN, Known debts): the feed flushed on the raw VAD's silence. After the
    caller's speech, sound the VAD takes for speech but the level gate calls silence (under
    its floor) was held in chunks: the engine counted it as the silence that ends the turn,
    the STT got it up to a chunk late. The flush follows the engine's verdict."""
    clock = ManualClock()
    stt = RecordingSTT(["are you open"], clock)
    providers = ProviderSet([stt], [FakeLLM(answers())], [FakeTTS()])
    vad = QuietIsSpeechVad(clock)
    call = LevelVadCall(tmp_path, providers, MemoryLeg("call-1", clock), vad)
    call.settings = Settings.model_validate({**call.settings.model_dump(), "stt": {"send_chunk_ms": 240}})
    async with call:
        await call.leg.run_for(1.5)  # the greeting
        call.leg.say(LOUD * 26 + QUIET * 60)
        await call.until(lambda: bool(stt.finalize_at), 3.0)
        speech_end = vad.last_loud
        assert speech_end > 0 and vad.last_speech >= stt.finalize_at[0]  # "speech" to the VAD
        # the level gate's 200 ms window drains of the loud frames, then each quiet frame is
        # silence to the engine (its endpoint counts it) and goes to the STT as it comes
        after = [(t, n) for t, n in stt.sizes if speech_end + 0.3 < t < stt.finalize_at[0]]
        assert len(after) >= 5, after
        assert all(n == FRAME_BYTES for _, n in after), after
        assert len({round(t, 3) for t, _ in after}) == len(after)
