"""Silero's sliced batch runs (silero_shared.SLICE, each further slice its own loop callback)
against each call's VAD alone, second reader's guards: however the windows are cut, every
frame's decision is the one the call's VAD makes alone, through both the driver's way
(``speech_now`` and a callback that asks the next frame) and ``speech`` (awaited); a waiter
cancelled while its window sits in a later slice leaves its VAD in step and hangs nobody; a
failed run costs only its own slice's windows and the batch runs again after it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from bridge.conversation import silero_shared
from bridge.conversation.silero_shared import WINDOW, shared_silero
from bridge.conversation.vad import SileroVad, WebrtcSileroVad

from .test_vad_batched import _frames, calls  # noqa: F401  (the module's fixture)


@pytest.fixture(autouse=True)
def _one_pass_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests step the loop pass by pass and expect each pass's windows answered at its
    end: no holding under load (silero_shared.HOLD_FROM; test_silero_hold.py tests that)."""
    monkeypatch.setattr(silero_shared, "HOLD_FROM", 10**9)


async def _idle(batch: silero_shared.SileroBatch) -> None:
    """Until no run is due any more (bounded: each slice is one loop pass or two)."""
    for _ in range(2000):
        if not batch._due and not batch._queued:
            return
        await asyncio.sleep(0)
    raise AssertionError("the batch never went idle")


@pytest.mark.parametrize("size", [1, 2, 3])  # every window its own run; small slices
def test_every_frame_decided_as_alone_whatever_the_slices(
    calls: list[bytes], monkeypatch: pytest.MonkeyPatch, size: int  # noqa: F811
) -> None:
    monkeypatch.setattr(silero_shared, "SLICE", size)
    alone = []
    for pcm in calls:
        vad = WebrtcSileroVad()
        alone.append([vad.is_speech(f) for f in _frames(pcm)])

    async def awaited_call(pcm: bytes, lead: int) -> list[bool]:
        vad = WebrtcSileroVad()
        for _ in range(lead):  # the calls' frames fall in different passes and slices
            await asyncio.sleep(0)
        return [await vad.speech(frame) for frame in _frames(pcm)]

    def chained_call(pcm: bytes, out: list[bool], finished: asyncio.Future[None]) -> None:
        """The driver's way: the next frame is asked only once this one is decided."""
        vad = WebrtcSileroVad()
        frames = _frames(pcm)

        def ask() -> None:
            while len(out) < len(frames):
                answer = vad.speech_now(frames[len(out)], later)
                if answer is None:
                    return
                out.append(answer)
            finished.set_result(None)

        def later(result: bool | BaseException) -> None:
            assert not isinstance(result, BaseException)
            out.append(result)
            ask()

        ask()

    async def run() -> tuple[list[list[bool]], int]:
        loop = asyncio.get_running_loop()
        batch = shared_silero().batch()
        largest, batch.largest = batch.largest, 0
        tasks = [asyncio.create_task(awaited_call(pcm, 3 * i)) for i, pcm in enumerate(calls)]
        chained: list[list[bool]] = [[] for _ in calls]
        done = [loop.create_future() for _ in calls]
        for i, pcm in enumerate(calls):
            chained_call(pcm, chained[i], done[i])
        awaited = await asyncio.wait_for(asyncio.gather(*tasks), 60)
        await asyncio.wait_for(asyncio.gather(*done), 60)
        await _idle(batch)
        sliced, batch.largest = batch.largest, max(largest, batch.largest)
        return [*awaited, *chained], sliced

    decisions, largest = asyncio.run(run())
    assert largest <= max(size + size // 2, 1)  # the slicing was in force
    assert decisions == alone + alone


def test_a_waiter_cancelled_in_a_later_slice_leaves_its_vad_in_step(
    calls: list[bytes], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """Four calls' windows in one pass, one window a slice; the last call's waiter is cancelled
    (its call ended) before its slice runs. The others get their answers; the batch goes idle
    (nothing left due, no hung await); the cancelled VAD's window still ran, so the VAD, asked
    on, decides every later frame as alone."""
    monkeypatch.setattr(silero_shared, "SLICE", 1)
    frames = [_frames(pcm)[:40] for pcm in calls[:4]]
    alone = []
    for fs in frames:
        vad = SileroVad()
        alone.append([vad.is_speech(f) for f in fs])

    async def run() -> tuple[list[list[bool]], int]:
        batch = shared_silero().batch()
        lost = 0
        vads = [SileroVad() for _ in frames]
        got: list[list[bool]] = [[] for _ in frames]
        for k in range(len(frames[0])):
            tasks = [asyncio.create_task(vad.speech(fs[k])) for vad, fs in zip(vads, frames, strict=True)]
            await asyncio.sleep(0)  # every task has asked: the windows are queued
            cancelled = k % 5 == 3 and batch._due
            if cancelled:
                tasks[3].cancel()
            for i, task in enumerate(tasks):
                try:
                    got[i].append(await asyncio.wait_for(task, 10))
                except asyncio.CancelledError:
                    assert cancelled and i == 3
                    lost += 1
                    got[i].append(alone[i][k])  # its answer is lost, not its state
            await _idle(batch)
        return got, lost

    got, lost = asyncio.run(run())
    assert lost > 0  # some waiter really was cancelled with its window queued
    assert got == alone


def test_a_failed_slice_costs_only_its_own_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(silero_shared, "SLICE", 1)
    model = shared_silero()
    window = np.zeros(WINDOW, dtype=np.float32)
    real_run = model.run

    async def run() -> list[object]:
        got: list[object] = []
        streams = [model.stream() for _ in range(3)]
        runs = [0]

        def second_fails(*args: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            runs[0] += 1
            if runs[0] == 2:
                raise RuntimeError("ort failed")
            return real_run(*args)

        def record(result: float | BaseException) -> None:
            got.append(result)

        done: Callable[[float | BaseException], None] = record
        with monkeypatch.context() as patch:
            patch.setattr(model, "run", second_fails)
            for stream in streams:
                stream.process_then(window, done)
            await _idle(model.batch())
        assert [type(r) for r in got] == [float, RuntimeError, float]
        for stream in streams:  # every stream is free again and the batch runs again
            stream.process_then(window, done)
        await _idle(model.batch())
        return got

    got = asyncio.run(run())
    assert len(got) == 6 and all(isinstance(p, float) for p in got[3:])


def test_each_window_answer_runs_in_the_context_of_the_call_that_queued_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the stream path a call's frames come from its connection's task, which carries its
    CallUUID (callcontext.enter): the VAD's answer, and what the driver does on it (the engine,
    the held events, the onset's LLM warm-up task and its log line), must run in that call's
    context, not in the context of whichever call queued the pass's first window. With one
    window a slice too (the further slices are callbacks of their own)."""
    from bridge import callcontext

    window = np.zeros(WINDOW, dtype=np.float32)

    async def run(size: int) -> list[tuple[str, str]]:
        monkeypatch.setattr(silero_shared, "SLICE", size)
        model = shared_silero()
        seen: list[tuple[str, str]] = []

        async def call(uuid: str) -> None:
            callcontext.CALL_UUID.set(uuid)  # as stream/server.py's connection task does
            stream = model.stream()
            stream.process_then(window, lambda _: seen.append((uuid, callcontext.CALL_UUID.get())))

        await asyncio.gather(*(call(f"uuid-{i}") for i in range(5)))
        await _idle(model.batch())
        return seen

    for size in (32, 1):
        seen = asyncio.run(run(size))
        assert len(seen) == 5
        assert all(mine == context for mine, context in seen), seen


def test_webrtc_silero_inlined_webrtc_call_decides_as_webrtc_vad() -> None:
    """``_silero_needed`` calls webrtc's C function itself: the same verdicts as WebrtcVad on
    the same frames, and the same refusal of a frame of the wrong size."""
    import numpy as np
    import pytest

    from bridge.conversation.vad import _SILERO_HANGOVER_FRAMES, WebrtcVad

    rng = np.random.default_rng(3)
    combined, plain = WebrtcSileroVad(), WebrtcVad(3)
    since = _SILERO_HANGOVER_FRAMES + 1
    seen = set()
    for n in range(400):
        amp = [0, 50, 3000, 20000][n // 25 % 4]
        pcm = (rng.integers(-amp, amp + 1, 160, dtype=np.int16)
               + (np.sin(np.arange(160) * 0.3 * (1 + n % 5)) * amp).astype(np.int16)).tobytes()
        webrtc = plain.is_speech(pcm)
        seen.add(webrtc)
        since = 0 if webrtc else since + 1
        assert combined._silero_needed(pcm) == (since <= _SILERO_HANGOVER_FRAMES)
    assert seen == {True, False}  # both of webrtc's answers were compared
    with pytest.raises(ValueError):
        combined._silero_needed(bytes(318))


def test_one_window_fast_path_cuts_windows_as_the_general_loop() -> None:
    """SileroVad._windows' unrolled one-window case gives the windows (values and order) and
    the leftover the general loop gives, for frames of every size around the window's."""
    import numpy as np

    from bridge.conversation import vad as vad_mod

    def general(obj: SileroVad, pcm: bytes) -> list[np.ndarray]:
        samples = np.frombuffer(pcm, "<i2")
        out: list[np.ndarray] = []
        start = 0
        while start < samples.size:
            take = min(obj._window - obj._filled, samples.size - start)
            obj._pending[obj._filled : obj._filled + take] = samples[start : start + take]
            obj._filled += take
            start += take
            if obj._filled == obj._window:
                out.append(obj._pending * vad_mod._SCALE)
                obj._filled = 0
        return out

    rng = np.random.default_rng(5)
    fast, slow = SileroVad(), SileroVad()
    for n in range(600):
        size = [160, 160, 160, 96, 255, 256, 257, 511, 512, 600, 1][n % 11]
        pcm = rng.integers(-32768, 32768, size, dtype=np.int16).tobytes()
        got, want = list(fast._windows(pcm)), general(slow, pcm)
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        assert fast._filled == slow._filled
        assert np.array_equal(fast._pending[: fast._filled], slow._pending[: slow._filled])
