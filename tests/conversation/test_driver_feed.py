"""The leg hands its events to the driver's consumer (AudioLeg.consume), with no task woken per
frame: the engine sees every frame in the order the leg produced it, a frame that waits for
silero's batched window holds the ones after it (they never overtake it), LegEnded comes last
and once even while a window is pending, and the leg's bounds drop the newest frames while the
consumer waits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bridge.conversation import driver as driver_module
from bridge.conversation.driver import Conversation
from bridge.conversation.transcript import TranscriptWriter
from bridge.conversation.vad import Later, WebrtcSileroVad
from bridge.leg import FRAME_BYTES, AudioFrame, LegEnded, LegEvent, PlaybackDone, PlaybackStarted
from bridge.providers.factory import ProviderSet
from devkit.manual_clock import ManualClock
from devkit.memory_leg import MemoryLeg
from tests.conversation.fakes import FakeLLM, FakeSTT, FakeTTS
from tests.conversation.harness import FALLBACK
from tests.conversation.test_driver import INFO, answers, settings_for

SILENCE = bytes(FRAME_BYTES)


def numbered(i: int) -> bytes:
    """A quiet frame that says which it is (its first sample)."""
    return i.to_bytes(2, "little") + bytes(FRAME_BYTES - 2)


def number(pcm: bytes) -> int:
    return int.from_bytes(pcm[:2], "little")


class HeldVad:
    """Never speech; the frames named in ``wait`` get their answer only when the test gives
    it (``answer``), as a frame waits for silero's window."""

    def __init__(self, wait: set[int]) -> None:
        self.wait = wait
        self.pending: list[Later] = []

    def is_speech(self, pcm: bytes) -> bool:
        return False

    async def speech(self, pcm: bytes) -> bool:
        return False

    def speech_now(self, pcm: bytes, later: Later) -> bool | None:
        if number(pcm) in self.wait:
            self.pending.append(later)
            return None
        return False

    def answer(self, result: bool | BaseException = False) -> None:
        later = self.pending.pop(0)
        later(result)


class Harness:
    def __init__(self, tmp_path: Path, vad: Any, leg_class: type[MemoryLeg] = MemoryLeg,
                 conv: dict[str, Any] | None = None, **leg_args: Any) -> None:
        self.clock = ManualClock()
        self.leg = leg_class("call-1", self.clock, **leg_args)
        settings = settings_for(tmp_path, **(conv or {}))
        providers = ProviderSet([FakeSTT(["are you open"])], [FakeLLM(answers())], [FakeTTS()])
        self.writer = TranscriptWriter.for_call(settings, INFO)
        self.conv = Conversation(self.leg, providers, settings, transcript=self.writer, call_info=INFO,
                                 fallback_audio=FALLBACK, clock=self.clock, vad=vad)
        self.frames: list[tuple[float, bytes, bool]] = []  # what the engine was given
        self.inputs: list[str] = []  # the engine's leg inputs, in order
        engine = self.conv.engine
        on_frame, on_ended, on_started = engine.on_frame, engine.on_leg_ended, engine.on_playback_started

        def frame(now: float, pcm: bytes, speech: bool) -> None:
            self.frames.append((now, pcm, speech))
            self.inputs.append(f"frame{number(pcm)}")
            on_frame(now, pcm, speech)

        def ended(now: float, reason: str) -> None:
            self.inputs.append(f"ended:{reason}")
            on_ended(now, reason)

        def started(now: float, utterance_id: str, t: float) -> None:
            self.inputs.append("started")
            on_started(now, utterance_id, t)

        engine.on_frame = frame  # type: ignore[method-assign]
        engine.on_leg_ended = ended  # type: ignore[method-assign]
        engine.on_playback_started = started  # type: ignore[method-assign]
        self.task: asyncio.Task[str] | None = None

    async def __aenter__(self) -> Harness:
        self.task = asyncio.create_task(self.conv.run())
        await settle()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None and not self.task.done():
            await self.leg.remote_hangup("bye")
            await asyncio.wait_for(self.task, 5)
        self.writer.close()

    def step(self, n: int = 1) -> None:
        """``n`` ticks in one pass of the loop: nothing else runs between them."""
        for _ in range(n):
            self.leg.step()
            self.clock.advance(0.020)


async def settle(passes: int = 30) -> None:
    for _ in range(passes):
        await asyncio.sleep(0)


async def test_frames_queue_behind_a_pending_window_and_keep_their_order(tmp_path: Path) -> None:
    vad = HeldVad({3, 5})
    async with Harness(tmp_path, vad) as h:
        h.leg.say(b"".join(numbered(i) for i in range(1, 9)))
        h.step(8)  # eight frames in one loop pass; frame 3 waits for its window
        assert [number(pcm) for _, pcm, _ in h.frames] == [1, 2]
        assert len(vad.pending) == 1
        before = h.clock.now()
        vad.answer(True)  # frame 3's window ran: 3, then 4, then 5 waits again
        assert [(number(pcm), speech) for _, pcm, speech in h.frames] == [
            (1, False), (2, False), (3, True), (4, False)]
        vad.answer(False)
        assert [number(pcm) for _, pcm, _ in h.frames] == list(range(1, 9))
        # the time is read when the engine gets the frame: after the window, never backwards
        times = [t for t, _, _ in h.frames]
        assert times == sorted(times) and times[2] == before


async def test_real_silero_batches_decide_every_frame_as_the_vad_alone_in_order(
    tmp_path: Path, speech: dict[str, bytes]
) -> None:
    """The daemon's VAD (webrtc + shared batched silero) behind the leg's feed: several frames
    put in one loop pass queue behind a window, and the engine gets every frame, in order,
    with the decision the same VAD gives frame by frame with no batching."""
    async with Harness(tmp_path, WebrtcSileroVad(), keep_caller_audio=True) as h:
        h.leg.say(speech["open"])
        queued_behind = 0
        for _ in range(len(speech["open"]) // FRAME_BYTES // 4 + 10):
            h.step(4)  # four ticks' frames before the loop runs: later ones wait for windows
            queued_behind = max(queued_behind, len(h.leg._events._items))
            await settle()
        delivered = bytes(h.leg.caller_audio)
        frames = [delivered[i : i + FRAME_BYTES] for i in range(0, len(delivered), FRAME_BYTES)]
        alone = WebrtcSileroVad()
        assert [pcm for _, pcm, _ in h.frames] == frames
        assert [speech for _, _, speech in h.frames] == [alone.is_speech(f) for f in frames]
        assert any(speech for _, _, speech in h.frames)
        assert queued_behind > 0  # frames did wait behind a pending window
        times = [t for t, _, _ in h.frames]
        assert times == sorted(times)


async def test_legended_while_a_window_is_pending_comes_after_that_frame_once(tmp_path: Path) -> None:
    vad = HeldVad({2})
    h = Harness(tmp_path, vad)
    async with h:
        h.leg.say(numbered(1) + numbered(2) + numbered(3))
        h.step(3)
        await h.leg.remote_hangup("bye")  # the caller hangs up while frame 2 waits
        await settle()
        assert h.task is not None and not h.task.done()
        assert "ended:bye" not in h.inputs
        vad.answer()
        assert await asyncio.wait_for(h.task, 5) == "bye"
    heard = [i for i in h.inputs if i != "started"]
    assert heard == ["frame1", "frame2", "frame3", "ended:bye"]


async def test_a_failing_window_ends_the_call_instead_of_stalling_it(tmp_path: Path) -> None:
    vad = HeldVad({2})
    h = Harness(tmp_path, vad)
    async with h:
        h.leg.say(numbered(1) + numbered(2) + numbered(3))
        h.step(3)
        vad.answer(RuntimeError("onnx run failed"))
        assert h.task is not None
        assert await asyncio.wait_for(h.task, 5) == "error"
        await settle()
    assert h.leg.hangup_reason == "error"
    assert [i for i in h.inputs if i.startswith("ended")] == ["ended:error"]


async def test_a_waiting_consumer_lets_the_leg_drop_the_newest_frames_and_count_them(tmp_path: Path) -> None:
    """The leg's bound (500 frames) holds while the driver waits for a window: 600 ticks in
    one pass keep frames 1..501 (1 with the consumer, 500 queued) and drop 99, counted."""
    vad = HeldVad({1})
    async with Harness(tmp_path, vad) as h:
        h.leg.say(b"".join(numbered(i) for i in range(1, 601)))
        h.step(600)
        assert h.leg._events.dropped_frames == 99
        vad.answer()
        assert [number(pcm) for _, pcm, _ in h.frames] == list(range(1, 502))
        h.step(1)  # room again: the next frame goes straight to the engine
        assert len(h.frames) == 502


async def test_the_async_iterator_still_serves_agents_that_read_it() -> None:
    """events() (echo's old way, the prompt agent, tests): frames and playback marks in order,
    LegEnded last."""
    clock = ManualClock()
    leg = MemoryLeg("call-1", clock)
    got: list[LegEvent] = []

    async def read() -> None:
        async for event in leg.events():
            got.append(event)

    reader = asyncio.create_task(read())
    leg.play("u1", SILENCE * 3)
    leg.end_utterance("u1")
    for _ in range(4):
        leg.step()
        clock.advance(0.020)
        await settle(3)
    await leg.remote_hangup("bye")
    await asyncio.wait_for(reader, 5)
    kinds = [type(e) for e in got]
    assert kinds[0] is PlaybackStarted and kinds[-1] is LegEnded and kinds.count(LegEnded) == 1
    assert kinds.count(AudioFrame) == 4 and PlaybackDone in kinds


async def test_our_hang_up_unanswered_by_the_leg_stops_waiting_after_a_quiet_spell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine hung up (here: the call's time limit) but the leg never reports its end:
    the driver returns once the leg has been quiet for _END_WAIT_S."""
    monkeypatch.setattr(driver_module, "_END_WAIT_S", 0.2)

    class DeafLeg(MemoryLeg):
        async def hangup(self, reason: str = "normal") -> None:
            self.hangup_reason = reason  # noted, never ended

    h = Harness(tmp_path, HeldVad(set()), DeafLeg, {"max_call_s": 1.0})
    leg = h.leg
    async with h:
        for _ in range(200):
            if leg.hangup_reason is not None:
                break
            h.step()
            await settle(5)
        assert leg.hangup_reason is not None
        assert h.task is not None and not h.task.done()
        await asyncio.wait_for(h.task, 5)  # the leg is quiet: no more events


def _break_the_engine(h: Harness) -> None:
    """An engine bug that also breaks ending it: on_frame raises, and so does on_leg_ended
    (both go through the same broken reply state, e.g. _cancel_reply)."""
    engine = h.conv.engine

    def broken_frame(now: float, pcm: bytes, speech: bool) -> None:
        raise RuntimeError("engine bug on a frame")

    def broken_end(now: float, reason: str) -> None:
        h.inputs.append(f"ended:{reason}")
        raise RuntimeError("the same bug on the end")

    engine.on_frame = broken_frame  # type: ignore[method-assign]
    engine.on_leg_ended = broken_end  # type: ignore[method-assign]


async def test_a_bug_that_also_breaks_ending_the_engine_still_ends_the_call(tmp_path: Path) -> None:
    """The frame path's bug handler (_crashed) ends the engine; if that raises too, the call
    must still be over for the driver (run() returns, the leg is hung up), as on main, where
    the reader task died and run() returned. Not a consumer left attached for ever, failing
    on every frame, and a run() that never returns even after the leg's LegEnded."""
    h = Harness(tmp_path, HeldVad(set()))
    async with h:
        _break_the_engine(h)
        h.leg.say(numbered(1))
        h.step(1)
        await settle()
        assert h.task is not None
        assert h.task.done(), "run() still waiting after the frame path crashed"
        await h.task
    assert h.leg.hangup_reason == "error"


async def test_a_bug_after_a_silero_window_that_also_breaks_ending_the_engine_still_ends_the_call(
    tmp_path: Path,
) -> None:
    """The same from the window's answer (_vad_done): the feed must not stay held (LegEnded
    queued behind it for ever) and run() must return."""
    vad = HeldVad({1})
    h = Harness(tmp_path, vad)
    async with h:
        _break_the_engine(h)
        h.leg.say(numbered(1) + numbered(2))
        h.step(2)
        try:  # as silero_shared._call: a raising window callback is logged, the batch goes on
            vad.answer(False)
        except Exception:
            pass
        await settle()
        assert h.task is not None
        assert h.task.done(), "run() still waiting after the window's frame crashed"
        await h.task
    assert h.leg.hangup_reason == "error"


async def test_tasks_started_from_the_legs_call_run_in_the_calls_context(tmp_path: Path) -> None:
    """The agent task carries its call's context (callcontext: Plivo's CallUUID on every log
    line of the call); the leg hands events over in ITS own call (the media clock's task, the
    socket's protocol callback), which is no call's. What the driver starts from there (here
    the LLM round a '#' key starts, and the hang-up after a frame-path bug) must still run in
    the call's context, as when the driver's own reader task started them."""
    from bridge import callcontext

    seen: dict[str, str] = {}

    class ContextLLM(FakeLLM):
        async def stream(self, messages: Any, tools: Any) -> Any:
            seen["llm"] = callcontext.CALL_UUID.get()
            async for event in super().stream(messages, tools):
                yield event

    class ContextLeg(MemoryLeg):
        async def hangup(self, reason: str = "normal") -> None:
            seen["hangup"] = callcontext.CALL_UUID.get()
            await super().hangup(reason)

    h = Harness(tmp_path, HeldVad(set()), ContextLeg, {"greeting": ""})
    h.conv.providers.llm[0] = ContextLLM(answers())

    async def agent() -> str:  # as Supervised._run_agent: callcontext.enter(call_id)
        callcontext.CALL_UUID.set("uuid-of-this-call")
        return await h.conv.run()

    h.task = asyncio.create_task(agent())
    await settle()
    assert callcontext.CALL_UUID.get() == ""  # the leg's caller (here the test) is no call's
    h.leg.press("#")
    h.step(1)  # the digit goes to the engine in the leg's call: '#' starts an LLM round
    await settle()
    assert seen.get("llm") == "uuid-of-this-call"
    engine = h.conv.engine

    def broken_frame(now: float, pcm: bytes, speech: bool) -> None:
        raise RuntimeError("engine bug on a frame")

    engine.on_frame = broken_frame  # type: ignore[method-assign]
    h.step(1)
    await settle()
    assert await asyncio.wait_for(h.task, 5) == "error"
    h.writer.close()
    assert seen.get("hangup") == "uuid-of-this-call"


async def test_no_consumer_runs_in_the_media_clocks_send_phase() -> None:
    """media_clock.py: every leg sends first ('keep it short and uniform': that keeps each
    leg's send time at a steady offset within the tick), then the receive-side work. The
    playback marks a leg's send produces (PlaybackProgress every 5 frames, PlaybackDone) go
    to its consumer, i.e. into the engine (a transcript line, a log line, the next reply),
    only after every leg of the tick has sent: never between two legs' sends."""
    from bridge.media.media_clock import MediaClock
    from bridge.media.rtp_leg import RtpLeg
    from bridge.settings.media import MediaSettings
    from tests.media.support import allocator

    class OtherLeg:
        def __init__(self, log: list[str]) -> None:
            self.log = log

        def on_send(self, now: float) -> None:
            self.log.append("send")

        def on_readable(self, now: float) -> None:
            pass

        def on_tick(self, now: float) -> None:
            self.log.append("tick")

    loop = asyncio.get_running_loop()
    rtp = await RtpLeg.open("c", "127.0.0.1", allocator(2), MediaSettings())
    legs: list[Any] = [rtp, MemoryLeg("m", ManualClock())]
    try:
        for leg in legs:
            log: list[str] = []
            leg.play("u", bytes(FRAME_BYTES * 12))
            leg.end_utterance("u")
            leg.consume(lambda event, log=log: log.append(type(event).__name__)).release()
            log.clear()
            clock = MediaClock(loop, interval=3600.0)  # stepped by hand here
            other = OtherLeg(log)
            clock.add(leg)
            clock.add(other)  # the same group (few members share one): one send phase
            for _ in range(14):
                log.append("|")
                clock._tick(loop.time())
            clock.remove(leg)
            clock.remove(other)
            ticks = "".join(log).split("|")[1:]
            marks = [t for t in ticks if "PlaybackProgress" in t or "PlaybackDone" in t]
            assert len(marks) >= 3, ticks
            for tick in marks:  # the other leg sent before any mark reached the consumer
                assert tick.startswith("send"), (type(leg).__name__, ticks)
    finally:
        await rtp.close()
