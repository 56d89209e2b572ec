"""How loaded this daemon process is: event-loop lag, CPU, and whether to shed new calls.

A probe timer asks to run every PROBE_S; how late it actually runs is the loop lag every other
callback on the loop suffers too (a 20 ms RTP tick, a provider's first byte). Live calls are
what the loop protects: once the recent lag passes ``daemon.shed_loop_lag_ms`` new calls and
streams are refused with 503 (and OPTIONS answers 503, so Kamailio sends them to another
daemon) until it falls back under half of it. Shedding one call is better than every live
call going late. Lag only rises once the loop is saturated; ``daemon.shed_cpu_percent`` sheds
earlier, while the process's CPU over the last second is above that share of one core (until
it is 10 points under), so live calls keep their headroom.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from bridge.metrics import LOOP_LAG, LOOP_LAG_RECENT, PROCESS_CPU_RATIO, SHEDDING

log = logging.getLogger(__name__)

PROBE_S = 0.05
_WINDOW = 20  # probes in the "recent" figure (one second)
_CPU_EVERY_S = 1.0


class LoadMonitor:
    def __init__(self, shed_loop_lag_ms: float, shed_cpu_percent: float = 0.0) -> None:
        self._shed_s = shed_loop_lag_ms / 1000.0
        self._shed_cpu = shed_cpu_percent / 100.0
        self._recent: list[float] = []
        # mean lag over the last second (one late callback, e.g. a GC pass, does not shed calls
        # for a second; a loop that stays behind does) and the worst single one
        self.lag_recent_s = 0.0
        self.lag_max_s = 0.0
        self.cpu_ratio = 0.0  # process CPU time / wall time over the last second (1.0 = one core)
        self.shedding = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="load-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def overloaded(self) -> bool:
        return self.shedding

    def record_lag(self, lag_s: float) -> None:
        """One probe's lateness; updates the recent figure and the shedding state."""
        LOOP_LAG.observe(lag_s)
        self._recent.append(lag_s)
        if len(self._recent) > _WINDOW:
            del self._recent[0]
        self.lag_recent_s = sum(self._recent) / len(self._recent)
        self.lag_max_s = max(self._recent)
        LOOP_LAG_RECENT.set(self.lag_recent_s)
        self._decide()

    def record_cpu(self, ratio: float) -> None:
        """The process's CPU over the last second (1.0 = one core); may start or end shedding."""
        self.cpu_ratio = ratio
        PROCESS_CPU_RATIO.set(ratio)
        self._decide()

    def _decide(self) -> None:
        lag_on = self._shed_s > 0 and self.lag_recent_s > self._shed_s
        cpu_on = self._shed_cpu > 0 and self.cpu_ratio > self._shed_cpu
        if not self.shedding and (lag_on or cpu_on):
            self.shedding = True
            SHEDDING.set(1)
            log.warning("%s: refusing new calls", "event loop late" if lag_on else "CPU near one core",
                        extra={"loop_lag_ms": round(self.lag_recent_s * 1000, 1),
                               "cpu_percent": round(self.cpu_ratio * 100, 1)})
        elif self.shedding and not lag_on and not cpu_on:
            lag_ok = self._shed_s <= 0 or self.lag_recent_s < self._shed_s / 2
            cpu_ok = self._shed_cpu <= 0 or self.cpu_ratio < self._shed_cpu - 0.1
            if lag_ok and cpu_ok:
                self.shedding = False
                SHEDDING.set(0)
                log.info("event loop caught up: taking new calls again")

    def snapshot(self) -> dict[str, float | bool]:
        return {
            "loop_lag_ms": round(self.lag_recent_s * 1000, 1),
            "loop_lag_max_ms": round(self.lag_max_s * 1000, 1),
            "cpu_percent": round(self.cpu_ratio * 100, 1),
            "shedding": self.shedding,
            "pid": os.getpid(),
        }

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        cpu_at, wall_at = time.process_time(), loop.time()
        while True:
            due = loop.time() + PROBE_S
            await asyncio.sleep(PROBE_S)
            now = loop.time()
            self.record_lag(max(now - due, 0.0))
            if now - wall_at >= _CPU_EVERY_S:
                cpu = time.process_time()
                self.record_cpu((cpu - cpu_at) / (now - wall_at))
                cpu_at, wall_at = cpu, now
