"""An asyncio event loop on virtual time, for tests and benches that need timers to fire at
exact, repeatable moments (the media clock's groups at their offsets, silero's held runs).

``time()`` is a number that moves only when ``run_until`` moves it: from timer to timer, each
time letting the loop run until nothing is ready (and no timer is due) any more. The code under
test runs unchanged (``loop.time``, ``call_at``, ``asyncio.sleep``); CPU time spent in a
callback takes no virtual time. The caller's coroutine must only ``await`` through
``settle``/``run_until`` (or ``asyncio.sleep(0)``): anything that waits on a timer of its own
would make the loop block in real time for a virtual delay.
"""

from __future__ import annotations

import asyncio

_SETTLE = 10_000  # loop passes at most per moment (a bug that keeps the loop busy fails loudly)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 1000.0) -> None:
        super().__init__()
        self.now = start

    def time(self) -> float:
        return self.now

    def busy(self) -> bool:
        """A callback ready, or a timer due now (or a cancelled one the next pass drops)."""
        if self._ready:  # type: ignore[attr-defined]
            return True
        scheduled = self._scheduled  # type: ignore[attr-defined]
        return bool(scheduled) and (scheduled[0].cancelled() or scheduled[0].when() <= self.now)

    def next_timer(self) -> float | None:
        """When the earliest live timer is due."""
        scheduled = self._scheduled  # type: ignore[attr-defined]
        if scheduled and not scheduled[0].cancelled():  # the usual case: a heap's head
            return float(scheduled[0].when())
        live = [h.when() for h in scheduled if not h.cancelled()]
        return min(live) if live else None


async def settle(passes: int = _SETTLE) -> None:
    """Run the loop at the current virtual time until nothing is ready and nothing due."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualTimeLoop):
        raise TypeError("settle needs a VirtualTimeLoop")
    for _ in range(passes):
        await asyncio.sleep(0)
        if not loop.busy():
            return
    raise RuntimeError(f"the loop was still busy after {passes} passes at {loop.now}")


async def run_until(when: float) -> None:
    """Move virtual time to ``when``, firing every timer due by then at its own time."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualTimeLoop):
        raise TypeError("run_until needs a VirtualTimeLoop")
    await settle()
    # asyncio runs a timer due within its clock resolution of now: one a hair after ``when``
    # is reached too (left ahead, its callback would read a time before its own, and a
    # sleeper that sleeps again until its deadline, as the media clock, would spin)
    resolution = loop._clock_resolution  # type: ignore[attr-defined]
    while True:
        timer = loop.next_timer()
        if timer is None or timer >= when + resolution:
            break
        loop.now = max(loop.now, timer)
        await settle()
    loop.now = max(loop.now, when)
    await settle()


def run(coro: object, start: float = 1000.0) -> object:
    """``asyncio.run`` on a fresh VirtualTimeLoop."""
    loop = VirtualTimeLoop(start)
    try:
        return loop.run_until_complete(coro)  # type: ignore[arg-type]
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
