"""Where an event loop's time goes, for the capacity benches (issue 13, bench/profiles/latency_150.md).

- ``LagProbe``: a 10 ms sleeper that records when it woke and how late, so a turn's stages can
  be matched with the lag the loop had meanwhile (``worst_between``), in any process of a
  bench (the bridge, the provider fakes, the simulated callers).
- ``CallbackProfile``: wraps ``asyncio.events.Handle._run`` (every callback and task step a
  pure-Python or C asyncio loop runs goes through it) and records the thread CPU time and the
  wall time of each, keyed by what ran (the task's coroutine or the callback's name). The
  longest ones are the loop's bursts: the lag every other call's work waits behind.
  Diagnostic only (it costs ~1 us a callback); a bench enables it with a flag.
- ``GcPauses``: how long each cyclic garbage-collector pass stopped the process, per
  generation (a gen-2 pass walks every tracked object: the SDKs', the models', every call's).
"""

from __future__ import annotations

import asyncio
import asyncio.events
import bisect
import gc
import time
from collections import defaultdict
from typing import Any


class LagProbe:
    def __init__(self, period_s: float = 0.01) -> None:
        self.period_s = period_s
        self.times: list[float] = []  # loop time of each wake-up
        self.lags: list[float] = []  # ms late at each wake-up
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lag-probe")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def reset(self) -> None:
        self.times, self.lags = [], []

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.period_s
            await asyncio.sleep(self.period_s)
            now = loop.time()
            # monotonic (one clock for every process of the box), not the loop's own clock
            self.times.append(time.monotonic())
            self.lags.append((now - due) * 1000)

    def summary(self) -> dict[str, float | None]:
        return summary(self.lags)

    def worst_between(self, t0: float, t1: float) -> float:
        """The largest lag (ms) of a wake-up in [t0, t1 + that lag]: how long the loop stalled
        at worst while a stage that ran from t0 to t1 was waiting for it."""
        times, lags = self.times, self.lags
        lo = bisect.bisect_left(times, t0)
        hi = bisect.bisect_right(times, t1 + 1.0)  # a stall covering t1 ends (is seen) after it
        worst = 0.0
        for i in range(lo, hi):
            # the wake-up at times[i] was blocked from times[i] - lag to times[i]
            if times[i] - lags[i] / 1000 <= t1:
                worst = max(worst, lags[i])
        return worst


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def summary(values: list[float]) -> dict[str, float | None]:
    return {"p50": pct(values, 0.5), "p95": pct(values, 0.95), "p99": pct(values, 0.99),
            "max": pct(values, 1.0), "samples": len(values)}


def _key(handle: asyncio.events.Handle) -> str:
    callback = handle._callback  # type: ignore[attr-defined]
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):  # a task step: name it by its coroutine
        coro = owner.get_coro()
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        return f"task {getattr(code, 'co_qualname', type(coro).__name__)}"
    if isinstance(owner, asyncio.Future):  # a future's done callbacks being scheduled
        return f"future {getattr(callback, '__qualname__', repr(callback))}"
    name = getattr(callback, "__qualname__", None) or type(callback).__name__
    module = getattr(callback, "__module__", None) or ""
    return f"{module}.{name}" if module else name


# callbacks whose every run is kept (CallbackProfile.samples): silero's batch run
TRACKED = ("SileroBatch._run",)


class CallbackProfile:
    """Thread CPU time and wall time of every loop callback while installed (one at a time)."""

    def __init__(self) -> None:
        self.cpu_ns: dict[str, int] = defaultdict(int)
        self.count: dict[str, int] = defaultdict(int)
        self.max_cpu_ns: dict[str, int] = defaultdict(int)
        self.max_wall_ns: dict[str, int] = defaultdict(int)
        self.long: list[tuple[int, int, str]] = []  # (cpu ns, wall ns, key) of runs over 5 ms CPU
        # runs over 1, 2 and 5 ms of CPU, all callbacks (what a provider message may wait behind)
        self.over_ns = {1_000_000: 0, 2_000_000: 0, 5_000_000: 0}
        # every run's CPU of the callbacks named here (silero's batch: sliced or not), for
        # percentiles; a few thousand runs a minute, so kept whole
        self.samples: dict[str, list[int]] = defaultdict(list)
        self._original: Any = None

    def install(self) -> None:
        handle_cls = asyncio.events.Handle
        original = self._original = handle_cls._run
        thread_ns, wall_ns = time.thread_time_ns, time.perf_counter_ns
        cpu, count, max_cpu, max_wall, long = (self.cpu_ns, self.count, self.max_cpu_ns,
                                               self.max_wall_ns, self.long)
        over, samples = self.over_ns, self.samples

        def _run(handle: asyncio.events.Handle) -> None:
            c0, w0 = thread_ns(), wall_ns()
            original(handle)
            c, w = thread_ns() - c0, wall_ns() - w0
            key = _key(handle)
            cpu[key] += c
            count[key] += 1
            if c > max_cpu[key]:
                max_cpu[key] = c
            if w > max_wall[key]:
                max_wall[key] = w
            if c > 1_000_000:
                for limit in over:
                    if c > limit:
                        over[limit] += 1
                if c > 5_000_000:
                    long.append((c, w, key))
            if key.endswith(TRACKED):
                samples[key].append(c)

        handle_cls._run = _run  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if self._original is not None:
            asyncio.events.Handle._run = self._original  # type: ignore[method-assign]
            self._original = None

    def report(self, top: int = 15) -> dict[str, Any]:
        """The callbacks with the most CPU in all, the longest single runs, and how much of the
        loop's CPU went to runs over 5 ms."""
        total = sum(self.cpu_ns.values()) or 1

        def row(key: str) -> dict[str, Any]:
            return {"what": key, "count": self.count[key], "cpu_ms": round(self.cpu_ns[key] / 1e6, 1),
                    "share": round(self.cpu_ns[key] / total, 3),
                    "mean_us": round(self.cpu_ns[key] / self.count[key] / 1e3, 1),
                    "max_cpu_ms": round(self.max_cpu_ns[key] / 1e6, 2),
                    "max_wall_ms": round(self.max_wall_ns[key] / 1e6, 2)}

        by_total = sorted(self.cpu_ns, key=lambda k: -self.cpu_ns[k])[:top]
        by_max = sorted(self.max_cpu_ns, key=lambda k: -self.max_cpu_ns[k])[:top]
        long_cpu = sum(c for c, _, _ in self.long)
        long_by: dict[str, int] = defaultdict(int)
        for _, _, key in self.long:
            long_by[key] += 1
        tracked = {}
        for key, runs in self.samples.items():
            ordered = sorted(runs)
            tracked[key] = {"count": len(ordered), **{
                f"{name}_cpu_ms": round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6, 2)
                for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))}}
        return {
            "callbacks": sum(self.count.values()),
            "cpu_s": round(total / 1e9, 2),
            "runs_over_ms_cpu": {str(limit // 1_000_000): n for limit, n in self.over_ns.items()},
            "tracked": tracked,
            "runs_over_5ms_cpu": len(self.long),
            "their_cpu_share": round(long_cpu / total, 3),
            "runs_over_5ms_by_callback": dict(sorted(long_by.items(), key=lambda kv: -kv[1])[:top]),
            "by_total_cpu": [row(k) for k in by_total],
            "by_longest_run": [row(k) for k in by_max],
        }


class GcPauses:
    """Wall and thread CPU time of every garbage-collector pass while installed, per generation
    (CPU time is what the pass cost; wall time adds what a busy box took from it)."""

    def __init__(self) -> None:
        self.wall_ms: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self.cpu_ms: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self.collected = {0: 0, 1: 0, 2: 0}  # unreachable cycles freed: their teardown is in the pass
        self._started = (0, 0)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = (time.perf_counter_ns(), time.thread_time_ns())
        else:
            wall, cpu = self._started
            gen = info["generation"]
            self.wall_ms[gen].append((time.perf_counter_ns() - wall) / 1e6)
            self.cpu_ms[gen].append((time.thread_time_ns() - cpu) / 1e6)
            self.collected[gen] += info.get("collected", 0)

    def install(self) -> None:
        gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for gen, walls in self.wall_ms.items():
            cpus = self.cpu_ms[gen]
            out[f"gen{gen}"] = {"passes": len(walls), "cpu_ms": round(sum(cpus), 1),
                                "max_cpu_ms": round(max(cpus, default=0.0), 1),
                                "collected": self.collected[gen],
                                "max_wall_ms": round(max(walls, default=0.0), 1)}
        return out


def gc_census(top: int = 20) -> dict[str, Any]:
    """The objects the cyclic GC tracks now (frozen ones apart), by type: what a gen-2 pass
    walks. Takes a second or so at 150 calls: a diagnostic, once per run."""
    from collections import Counter

    objects = gc.get_objects()
    kinds = Counter(type(o).__qualname__ for o in objects)
    # a pass visits every reference of every tracked object: the widest containers cost most
    widths = sorted(((len(gc.get_referents(o)), type(o).__qualname__) for o in objects), reverse=True)
    # and the slowest to traverse, by type (get_referents runs the type's tp_traverse)
    traverse_ns: Counter[str] = Counter()
    for o in objects:
        started = time.perf_counter_ns()
        gc.get_referents(o)
        traverse_ns[f"{type(o).__module__}.{type(o).__qualname__}"] += time.perf_counter_ns() - started
    timed = {}
    for gen in (0, 1, 2):  # one pass of each, timed here (thread CPU time)
        started = time.thread_time_ns()
        gc.collect(gen)
        timed[f"gen{gen}_cpu_ms"] = round((time.thread_time_ns() - started) / 1e6, 2)
    return {"tracked": len(objects), "frozen": gc.get_freeze_count(),
            "references": sum(w for w, _ in widths), "widest": widths[:8], **timed,
            "slowest_traverse_ms": {k: round(v / 1e6, 2) for k, v in traverse_ns.most_common(8)},
            "by_type": dict(kinds.most_common(top))}
