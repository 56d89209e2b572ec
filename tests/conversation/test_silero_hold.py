"""Silero's held runs (silero_shared, Holding): under load the windows of a period's media clock
groups (and of several passes) run in one session run; a lone call or a light load is answered
at the end of its own pass; every probability and each call's order are the unbatched ones; a
backlog and a full batch are not held; slices, a run's exception and a call that ends while its
window is held behave as without holding. On virtual time (devkit/virtual_loop.py): the clock's
groups tick at their real offsets and timers fire at exact moments, so nothing here is timed."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest

from bridge.conversation import silero_shared
from bridge.conversation.silero_shared import HOLD, HOLD_FROM, WINDOW, SileroStream, shared_silero
from bridge.media.media_clock import MediaClock
from devkit.virtual_loop import VirtualTimeLoop, run_until, settle

PERIOD = 0.020


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def _windows(seed: int, count: int) -> list[np.ndarray]:
    """Noise with bursts of a tone: probabilities that move (speech-like and not)."""
    rng = np.random.default_rng(seed)
    t = np.arange(WINDOW) / 8000.0
    out = []
    for k in range(count):
        w = rng.normal(0, 0.02, WINDOW)
        if (k // 4 + seed) % 2:
            w += 0.4 * np.sin(2 * np.pi * (180 + 20 * seed) * t + k)
        out.append(w.astype(np.float32))
    return out


def _alone(windows: list[np.ndarray]) -> list[float]:
    stream = shared_silero().stream()
    return [stream.process(w) for w in windows]


class Caller:
    """A clock member whose every tick queues its call's next window (as a leg's tick runs
    its driver's VAD), and records each answer with the loop time it came at."""

    def __init__(self, seed: int, count: int) -> None:
        self.stream: SileroStream = shared_silero().stream()
        self.windows = _windows(seed, count)
        self.got: list[float | BaseException] = []
        self.asked: list[float] = []
        self.answered: list[float] = []

    def on_send(self, now: float) -> None:
        pass

    def on_readable(self, now: float) -> None:
        pass

    def on_tick(self, now: float) -> None:
        if len(self.asked) < len(self.windows) and len(self.asked) == len(self.got):
            loop = asyncio.get_running_loop()
            self.asked.append(loop.time())
            self.stream.process_then(self.windows[len(self.asked) - 1], self._done)

    def _done(self, result: float | BaseException) -> None:
        self.got.append(result)
        self.answered.append(asyncio.get_running_loop().time())


def _count_runs() -> tuple[list[int], Callable[[], None]]:
    """Every session run's size, from now on; the function that stops counting."""
    model = shared_silero()
    plain = model.run
    sizes: list[int] = []

    def counted(inputs: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sizes.append(len(inputs))
        return plain(inputs, states)

    model.run = counted  # type: ignore[method-assign]

    def stop() -> None:
        model.run = plain  # type: ignore[method-assign]

    return sizes, stop


async def _clocked(groups: int, per_group: int, periods: int, warm: int) -> tuple[list[Caller], list[int]]:
    """``groups * per_group`` callers on a real media clock (its groups at their offsets);
    the session runs during ``periods`` periods after ``warm`` ones."""
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop, PERIOD, groups=groups, spread_from=per_group)
    callers = [Caller(n, warm + periods + 2) for n in range(groups * per_group)]
    for c in callers:
        clock.add(c)
    assert clock.group_sizes() == [per_group] * groups
    start = loop.time()
    await run_until(start + warm * PERIOD)
    sizes, stop = _count_runs()
    runs = shared_silero().runs
    try:
        await run_until(start + (warm + periods) * PERIOD)
    finally:
        stop()
    assert shared_silero().runs - runs == len(sizes)  # SharedSilero.runs counts the same runs
    for c in callers:
        clock.remove(c)
    await run_until(loop.time() + 2 * HOLD)  # a held run still waiting
    assert len(shared_silero().batch()._passes) <= groups  # the load's memory: HOLD_SPAN's passes
    return callers, sizes


def _check_alone(callers: list[Caller]) -> None:
    """Each call's answers, in its order, are the probabilities its windows get alone."""
    for c in callers:
        assert len(c.got) == len(c.asked) > 0
        assert not any(isinstance(g, BaseException) for g in c.got)
        reference = _alone(c.windows[: len(c.got)])
        assert np.max(np.abs(np.array(c.got, dtype=float) - np.array(reference))) < 1e-5


def test_two_clock_groups_of_a_period_share_one_run() -> None:
    """2 groups of 8 calls: one session run a period carrying both groups' 16 windows (main's
    batch ran once per group tick: 2 runs of 8)."""
    callers, sizes = _run(_clocked(groups=2, per_group=HOLD_FROM, periods=10, warm=3))
    assert sizes == [2 * HOLD_FROM] * 10
    _check_alone(callers)
    # the run comes HOLD after group 0's tick: group 1's windows, queued 10 ms later, wait
    # the rest (the held timer does not know that no other group comes before it)
    waits = {round(a - q, 6) for c in callers for q, a in zip(c.asked[3:], c.answered[3:], strict=False)}
    assert waits == {round(HOLD, 6), round(HOLD - PERIOD / 2, 6)}


def test_four_clock_groups_run_about_three_groups_a_run() -> None:
    """4 groups of 8: a run gathers the windows of the groups due within HOLD of its first (3
    groups), so 4 runs in 3 periods instead of 4 a period."""
    callers, sizes = _run(_clocked(groups=4, per_group=HOLD_FROM, periods=12, warm=3))
    assert len(sizes) <= 17 and sum(sizes) == 12 * 4 * HOLD_FROM
    assert max(sizes) == 3 * HOLD_FROM
    _check_alone(callers)


def test_a_light_load_is_answered_at_the_end_of_its_own_pass() -> None:
    """A lone call, and calls whose other passes queue fewer than HOLD_FROM windows, are not
    held: each answer comes at the very loop time its window was queued."""
    for groups, per_group in ((1, 1), (2, 1), (2, (HOLD_FROM - 1) // 2 or 1), (1, 4 * HOLD_FROM)):
        callers, sizes = _run(_clocked(groups=groups, per_group=per_group, periods=6, warm=2))
        for c in callers:
            assert c.answered == c.asked
        assert len(sizes) == 6 * groups
        _check_alone(callers)


async def _load(streams: int = HOLD_FROM) -> None:
    """One pass that queues ``streams`` windows (answered at its end: nothing before it)."""
    model = shared_silero()
    got: list[float | BaseException] = []
    for s, w in zip([model.stream() for _ in range(streams)], _windows(99, streams), strict=True):
        s.process_then(w, got.append)
    await settle()
    assert len(got) == streams


def test_a_held_window_waits_at_most_hold() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        await _load()
        await run_until(loop.time() + 0.005)
        stream, window = shared_silero().stream(), _windows(1, 1)[0]
        got: list[float | BaseException] = []
        queued = loop.time()
        stream.process_then(window, got.append)
        await run_until(queued + HOLD - 0.0005)
        assert got == []  # held (main's batch answered at the end of the pass)
        await run_until(queued + HOLD)
        assert got == pytest.approx(_alone([window]), abs=1e-5)

    _run(main())


def test_a_backlog_and_a_full_batch_are_not_held() -> None:
    """A window queued by its call's previous answer (a backlog), or a held batch reaching
    SLICE windows, runs at the end of that pass."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        await _load()
        await run_until(loop.time() + 0.005)
        at = loop.time()
        stream = shared_silero().stream()
        windows = _windows(2, 4)
        got: list[float | BaseException] = []

        def done(result: float | BaseException) -> None:
            got.append(result)
            if len(got) < len(windows):
                stream.process_then(windows[len(got)], done)

        stream.process_then(windows[0], done)
        # other calls' windows 5 ms later join the held batch: the load still stands when
        # the backlog comes (a backlog window held as any other would wait until at + 16 ms)
        await run_until(at + 0.005)
        others: list[float | BaseException] = []
        for s, w in zip([shared_silero().stream() for _ in range(HOLD_FROM)],
                        _windows(7, HOLD_FROM), strict=True):
            s.process_then(w, others.append)
        await run_until(at + HOLD)
        # held once, then the backlog at once
        assert len(got) == 4 and len(others) == HOLD_FROM and loop.time() == at + HOLD
        assert got == pytest.approx(_alone(windows), abs=1e-5)

        await run_until(loop.time() + silero_shared.HOLD_SPAN)  # that load forgotten
        await _load()
        await run_until(loop.time() + 0.005)
        full: list[float | BaseException] = []
        for s, w in zip([shared_silero().stream() for _ in range(silero_shared.SLICE)],
                        _windows(3, silero_shared.SLICE), strict=True):
            s.process_then(w, full.append)
        await settle()
        assert len(full) == silero_shared.SLICE  # no virtual time passed

    _run(main())


def test_a_held_batch_is_still_sliced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(silero_shared, "SLICE", 4)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await _load()
        await run_until(loop.time() + 0.005)
        streams = [shared_silero().stream() for _ in range(6)]
        windows = _windows(4, 6)
        got: list[tuple[int, float | BaseException]] = []
        sizes, stop = _count_runs()
        try:
            for i in range(3):  # held: 3 windows, under SLICE
                streams[i].process_then(windows[i], lambda r, i=i: got.append((i, r)))
            await run_until(loop.time() + 0.002)
            assert got == []
            for i in range(3, 6):  # 6 windows: the end of this pass, in 2 slices of 3
                streams[i].process_then(windows[i], lambda r, i=i: got.append((i, r)))
            await settle()
        finally:
            stop()
        assert sizes == [3, 3]
        assert [i for i, _ in got] == list(range(6))
        for i, r in got:
            assert r == pytest.approx(_alone([windows[i]])[0], abs=1e-5)

    _run(main())


def test_a_failed_held_run_reaches_every_window(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        await _load()
        await run_until(loop.time() + 0.005)
        model = shared_silero()
        streams = [model.stream() for _ in range(3)]
        got: list[float | BaseException] = []
        boom = RuntimeError("onnx failed")

        def failing(inputs: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            raise boom

        monkeypatch.setattr(model, "run", failing)
        for s, w in zip(streams, _windows(5, 3), strict=True):
            s.process_then(w, got.append)
        await run_until(loop.time() + HOLD)
        assert got == [boom, boom, boom]
        monkeypatch.undo()
        again: list[float | BaseException] = []
        streams[0].process_then(_windows(5, 1)[0], again.append)  # free again after the failure
        await run_until(loop.time() + HOLD)
        assert len(again) == 1 and isinstance(again[0], float)

    _run(main())


def test_a_call_that_ends_while_its_window_is_held_spares_the_others() -> None:
    """One call's waiter cancelled and its stream dropped, another's callback raising: the
    other calls of the held run get their own probabilities."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        await _load()
        await run_until(loop.time() + 0.005)
        model = shared_silero()
        windows = _windows(6, 4)
        ended = model.stream()
        gone = ended.process_batched(windows[0])
        kept = [model.stream() for _ in range(3)]
        got: dict[int, float | BaseException] = {}
        kept[0].process_then(windows[1], lambda r: got.setdefault(1, r))

        def broken(result: float | BaseException) -> None:
            raise RuntimeError("a call's bug")

        kept[1].process_then(windows[2], broken)
        kept[2].process_then(windows[3], lambda r: got.setdefault(3, r))
        gone.cancel()
        del ended
        gc.collect()
        await run_until(loop.time() + HOLD)
        assert got == pytest.approx({1: _alone([windows[1]])[0], 3: _alone([windows[3]])[0]}, abs=1e-5)

    _run(main())


def test_a_loop_that_is_gone_leaves_no_batch_behind() -> None:
    """One batch a loop, kept in a WeakKeyDictionary by its loop: the batch must not keep its
    loop alive (the value held its own key, so no entry ever went: every loop that ran a
    window stayed in memory, with whatever its batch still held when it ended, such as a
    held window's call)."""
    model = shared_silero()
    gc.collect()  # the other tests' loops, gone by now
    before = len(model._batches)

    async def main() -> None:
        got: list[float | BaseException] = []
        model.stream().process_then(_windows(8, 1)[0], got.append)
        await settle()
        assert len(got) == 1 and len(model._batches) == before + 1

    loop = VirtualTimeLoop()
    loop.run_until_complete(main())
    loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None
    assert len(model._batches) == before
