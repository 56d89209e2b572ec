"""Silero's windows from several calls run as one batched inference per loop pass: each call
gets exactly what it would get alone (espeak-ng speech with line noise, so the model sees real
speech and real silence), calls keep their own state, and the batch really is one run."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bridge.conversation import silero_shared
from bridge.conversation.silero_shared import WINDOW, shared_silero
from bridge.conversation.vad import WebrtcSileroVad
from bridge.leg import FRAME_BYTES

REPO = Path(__file__).resolve().parents[2]
LINES = [
    "When are you open on Saturday?",
    "I would like to make an appointment for next week please.",
    "Wait, what about Sunday?",
    "Yes.",
    "Could you tell me where you are located and whether there is parking?",
    "No thank you, that is all.",
]


@pytest.fixture(autouse=True)
def _one_pass_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests step the loop pass by pass and expect each pass's windows answered at its
    end: no holding under load (silero_shared.HOLD_FROM; test_silero_hold.py tests that)."""
    monkeypatch.setattr(silero_shared, "HOLD_FROM", 10**9)


@pytest.fixture(scope="module")
def calls(speech: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """One caller line per call, each with its own lead-in and noise, so the calls' windows
    line up differently and the batches have every size from 1 to len(LINES)."""
    from tests.support.audio import read_wav_pcm, speech_wav

    folder = tmp_path_factory.mktemp("batched")
    rng = np.random.default_rng(7)
    out = []
    for i, text in enumerate(LINES):
        pcm = np.frombuffer(read_wav_pcm(speech_wav(text, folder / f"{i}.wav")), "<i2")
        lead = np.zeros(800 * i + 37 * i, dtype=np.float64)  # 0.1 s more per call, off the window grid
        line = np.concatenate((lead, pcm.astype(np.float64), np.zeros(2400)))
        line += rng.normal(0.0, 60.0, line.size)  # line noise: silero must tell it from speech
        clipped = np.clip(line, -32768, 32767).astype("<i2")
        out.append(clipped[: clipped.size - clipped.size % (FRAME_BYTES // 2)].tobytes())
    return out


def _windows(pcm: bytes) -> list[np.ndarray]:
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    return [samples[i : i + WINDOW] for i in range(0, samples.size - WINDOW + 1, WINDOW)]


def _frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


def test_batched_probabilities_equal_each_call_alone(calls: list[bytes]) -> None:
    model = shared_silero()
    alone = []
    for pcm in calls:
        stream = model.stream()
        alone.append([stream.process(w) for w in _windows(pcm)])
    assert max(max(p) for p in alone) > 0.9 and min(min(p) for p in alone) < 0.1  # speech and silence

    async def together() -> tuple[list[list[float]], int, int]:
        streams = [model.stream() for _ in calls]
        windows = [_windows(pcm) for pcm in calls]
        got: list[list[float]] = [[] for _ in calls]
        runs, count = model.runs, model.windows
        for k in range(max(len(w) for w in windows)):
            # the calls that have a k-th window queue it in the same loop pass
            live = [i for i in range(len(calls)) if k < len(windows[i])]
            futures = [streams[i].process_batched(windows[i][k]) for i in live]
            for i, prob in zip(live, await asyncio.gather(*futures), strict=True):
                got[i].append(prob)
        return got, model.runs - runs, model.windows - count

    got, runs, windows = asyncio.run(together())
    assert windows == sum(len(p) for p in alone)
    assert runs == max(len(p) for p in alone)  # one run per pass, whatever the batch size
    for mine, reference in zip(got, alone, strict=True):
        assert len(mine) == len(reference)
        assert np.max(np.abs(np.array(mine) - np.array(reference))) < 1e-5


def test_batched_vad_decides_every_frame_as_the_unbatched_one(calls: list[bytes]) -> None:
    """The driver's way: one task per call awaiting ``speech`` frame by frame, 20 ms ticks."""
    alone = []
    for pcm in calls:
        vad = WebrtcSileroVad()
        alone.append([vad.is_speech(f) for f in _frames(pcm)])
    assert any(any(d) for d in alone) and not all(all(d) for d in alone)

    async def call(pcm: bytes, tick: asyncio.Condition) -> list[bool]:
        vad = WebrtcSileroVad()
        out = []
        for frame in _frames(pcm):
            async with tick:
                await tick.wait()  # every call's frame arrives on the same tick
            out.append(await vad.speech(frame))
        return out

    async def run_all() -> tuple[list[list[bool]], int]:
        tick = asyncio.Condition()
        tasks = [asyncio.create_task(call(pcm, tick)) for pcm in calls]
        for _ in range(max(len(_frames(pcm)) for pcm in calls) + 1):
            await asyncio.sleep(0)
            async with tick:
                tick.notify_all()
            for _ in range(5):  # let every call finish its frame (one batched run) before the next
                await asyncio.sleep(0)
        for _ in range(10):
            await asyncio.sleep(0)
            async with tick:
                tick.notify_all()
        return list(await asyncio.gather(*tasks)), shared_silero().batch().largest

    decisions, largest = asyncio.run(run_all())
    assert decisions == alone
    assert largest > 1  # windows of several calls did share a run


def test_a_cancelled_call_does_not_disturb_the_others_in_its_batch(calls: list[bytes]) -> None:
    model = shared_silero()
    reference = model.stream()
    expected = [reference.process(w) for w in _windows(calls[0])[:20]]

    async def run() -> list[float]:
        mine, other = model.stream(), model.stream()
        got = []
        for w_mine, w_other in zip(_windows(calls[0])[:20], _windows(calls[1])[:20], strict=True):
            gone = other.process_batched(w_other)
            fut = mine.process_batched(w_mine)
            gone.cancel()  # the other call ended while its window was queued
            got.append(await fut)
        with pytest.raises(RuntimeError):  # one window in flight per stream
            mine.process_batched(w_mine)
            mine.process_batched(w_mine)
        return got

    assert asyncio.run(run()) == pytest.approx(expected, abs=1e-5)


def test_onnx_runtime_telemetry_is_off_without_being_asked(tmp_path: Path) -> None:
    """A process that never set ORT_DISABLE_TELEMETRY: importing the VAD sets it before ONNX
    Runtime loads (the reference: the variable must be there before the import), and loading
    and running the model makes no network system call (strace, when installed)."""
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    script = (
        "import os, sys, numpy as np\n"
        "from bridge.conversation import silero_shared as s\n"
        "assert 'onnxruntime' not in sys.modules\n"
        "flag = os.environ.get('ORT_DISABLE_TELEMETRY')\n"
        "st = s.shared_silero().stream()\n"
        "[st.process(np.zeros(s.WINDOW, np.float32)) for _ in range(50)]\n"
        "print(flag)\n"
    )
    cmd = [sys.executable, "-c", script]
    trace = None
    if shutil.which("strace"):
        trace = tmp_path / "strace.log"
        cmd = ["strace", "-f", "-qq", "-e", "trace=network", "-o", str(trace), *cmd]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    if trace is not None:
        calls = trace.read_text()
        assert "AF_INET" not in calls and "connect(" not in calls, calls[:2000]


def test_window_callbacks_follow_queue_order_and_may_queue_the_next_window(calls: list[bytes]) -> None:
    """The driver's way (process_then): each window's callback gets its probability in the
    order the windows were queued, every stream is free by then, so a callback can queue its
    call's next window at once; it joins the next pass's run. Same probabilities as alone."""
    model = shared_silero()
    windows = [_windows(pcm)[:12] for pcm in calls[:3]]
    alone = []
    for ws in windows:
        stream = model.stream()
        alone.append([stream.process(w) for w in ws])

    async def run() -> tuple[list[list[float]], list[int], int]:
        streams = [model.stream() for _ in windows]
        got: list[list[float]] = [[] for _ in windows]
        order: list[int] = []
        finished = asyncio.get_running_loop().create_future()

        def done_for(i: int) -> Callable[[float | BaseException], None]:
            def done(result: float | BaseException) -> None:
                assert not isinstance(result, BaseException)
                got[i].append(result)
                order.append(i)
                if len(got[i]) < len(windows[i]):
                    streams[i].process_then(windows[i][len(got[i])], done)
                elif all(len(g) == len(w) for g, w in zip(got, windows, strict=True)):
                    finished.set_result(None)
            return done

        runs = model.runs
        for i in (2, 0, 1):
            streams[i].process_then(windows[i][0], done_for(i))
        await asyncio.wait_for(finished, 10)
        return got, order, model.runs - runs

    got, order, runs = asyncio.run(run())
    assert order[:3] == [2, 0, 1] and order == [2, 0, 1] * 12
    assert runs == 12  # one run per pass, three windows each
    for mine, reference in zip(got, alone, strict=True):
        assert mine == pytest.approx(reference, abs=1e-5)


def test_a_failed_run_reaches_every_window_and_a_failing_callback_spares_the_others(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = shared_silero()
    window = np.zeros(WINDOW, dtype=np.float32)

    async def run() -> list[object]:
        got: list[object] = []
        first, second, third = model.stream(), model.stream(), model.stream()
        def failing(*args: object) -> None:
            raise RuntimeError("ort failed")

        with monkeypatch.context() as patch:
            patch.setattr(model, "run", failing)
            first.process_then(window, got.append)
            second.process_then(window, got.append)
            await asyncio.sleep(0)
        assert [type(r) for r in got] == [RuntimeError, RuntimeError]
        first.process_then(window, got.append)  # free again after the failure

        def broken(result: float | BaseException) -> None:
            raise ValueError("a call's bug")

        second.process_then(window, broken)
        third.process_then(window, got.append)
        await asyncio.sleep(0)
        return got

    got = asyncio.run(run())
    assert len(got) == 4 and all(isinstance(p, float) for p in got[2:])
    assert "window callback failed" in caplog.text


def test_a_busy_pass_runs_in_slices_and_a_socket_message_is_handled_between_them(
    calls: list[bytes],
) -> None:
    """100 calls' windows queued in one pass run as 3 slices of about SLICE windows, each its
    own loop callback; a message that reaches a socket while the first slice runs is handled
    before the second. Every window gets what it gets alone, callbacks in queue order."""
    model = shared_silero()
    sources = [_windows(pcm) for pcm in calls]
    windows = [sources[i % len(sources)][5 + i // len(sources)] for i in range(100)]
    alone = [model.stream().process(w) for w in windows]

    async def run() -> tuple[list[tuple[str, int]], list[float], int, int]:
        import socket

        loop = asyncio.get_running_loop()
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        events: list[tuple[str, int]] = []
        got: list[float] = [0.0] * len(windows)
        finished = loop.create_future()

        def message() -> None:
            reader.recv(16)
            events.append(("message", 0))

        loop.add_reader(reader.fileno(), message)

        def done_for(i: int) -> Callable[[float | BaseException], None]:
            def done(result: float | BaseException) -> None:
                assert not isinstance(result, BaseException)
                got[i] = result
                events.append(("window", i))
                if i == 0:
                    writer.send(b"x")  # a provider's message lands while slice 1 runs
                if i == len(windows) - 1:
                    finished.set_result(None)
            return done

        runs = model.runs
        batch = model.batch()
        largest = batch.largest
        batch.largest = 0
        try:
            for i, window in enumerate(windows):
                model.stream().process_then(window, done_for(i))
            await asyncio.wait_for(finished, 10)
        finally:
            loop.remove_reader(reader.fileno())
            reader.close()
            writer.close()
        sliced = batch.largest
        batch.largest = max(largest, sliced)
        return events, got, model.runs - runs, sliced

    events, got, runs, largest = asyncio.run(run())
    assert runs == 3 and largest == 34  # 100 windows: slices of 34, 34, 32
    assert [i for kind, i in events if kind == "window"] == list(range(100))
    assert events.index(("message", 0)) == 34  # after slice 1's callbacks, before slice 2's
    assert got == pytest.approx(alone, abs=1e-5)


def test_a_pass_of_47_windows_is_one_run() -> None:
    """Slicing pays the run's fixed cost again: under 48 windows a pass stays one run."""
    model = shared_silero()
    window = np.zeros(WINDOW, dtype=np.float32)

    async def run() -> int:
        runs = model.runs
        got: list[object] = []
        for _ in range(47):
            model.stream().process_then(window, got.append)
        await asyncio.sleep(0)
        assert len(got) == 47
        return model.runs - runs

    assert asyncio.run(run()) == 1
