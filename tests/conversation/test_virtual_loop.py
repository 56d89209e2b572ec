"""devkit/virtual_loop.py, which the silero hold tests and the frame-cost bench run on."""

from __future__ import annotations

import asyncio
import math

from devkit.virtual_loop import VirtualTimeLoop, run_until


def test_run_until_a_hair_before_a_timer_does_not_spin() -> None:
    """asyncio runs a timer due within its clock resolution of now: moved to a time one float
    step before a deadline (a sum of periods rounds so), the loop woke the sleeper early, at
    a virtual time before its deadline, and a sleeper that sleeps again until its deadline (as
    the media clock does) woke again and again with virtual time standing still."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadline = 1000.0 + 7 * 0.02
        target = math.nextafter(deadline, 0.0)  # a sum of periods may round so
        woke: list[float] = []

        async def sleeper() -> None:
            while loop.time() < deadline:  # noqa: ASYNC110  (the media clock's way: a deadline)
                await asyncio.sleep(deadline - loop.time())
            woke.append(loop.time())

        task = loop.create_task(sleeper())
        await run_until(target)
        await run_until(deadline)
        await task
        assert woke == [deadline]

    loop = VirtualTimeLoop(1000.0)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
