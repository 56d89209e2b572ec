"""How long the Flux client takes to notice a socket whose network path died WITHOUT a FIN or a
close, against the local Flux fake (``faults.stall_after``: the connection held open, nothing
read or sent, no Pong).

The caller keeps speaking (``--audio speech``: the stall comes 300 ms into a turn, so the turn
is open) or stays silent (``--audio silence``: between turns, where Flux promises no message),
20 ms frames at real time; the figure is the time from the fake going silent to the client's
reconnect. ``--watchdog main`` gives this client the detection main had (websockets' keepalive
20 s + 20 s, no in-turn watchdog); ``branch`` the defaults (Ping 2 s, Pong 3 s, 3 s of audio in
an open turn with no TurnInfo).

    python bench/flux_stall_detect.py --audio speech silence --watchdog branch main --n 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # devkit/ is not installed

import numpy as np

from bridge.providers.stt.flux_stt import FluxSTT
from devkit.fakes import FakeCloud
from devkit.fakes.server import DEEPGRAM_KEY

LIMIT_S = 90.0


def _audio(kind: str, ms: int) -> bytes:
    if kind == "silence":
        return bytes(ms * 16)
    t = np.arange(ms * 8) / 8000
    return (6000 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()


async def trial(kind: str, options: dict[str, Any]) -> float:
    async with FakeCloud() as cloud:
        cloud.flux.script.append("Book a table for two")
        cloud.flux.faults.stall_after = 8 * 300 + 1  # mu-law: the first frame after 300 ms
        cloud.flux.faults.fault_times = 1
        stt = FluxSTT(api_key=DEEPGRAM_KEY, url=cloud.http_url, max_reconnects=3, **options)
        stream = await stt.open()
        first = _audio(kind, 300)
        for i in range(0, len(first), 320):
            await stream.send(first[i : i + 320])
        await cloud.flux.journal.wait_for(lambda j: j.count("stalled") == 1)
        start = time.monotonic()
        frame = _audio(kind, 20)
        while stream.reconnects < 1 and time.monotonic() - start < LIMIT_S:
            await stream.send(frame)
            await asyncio.sleep(0.02)
        took = time.monotonic() - start
        await stream.close()
        return took


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", nargs="+", choices=["speech", "silence"], default=["speech", "silence"])
    parser.add_argument("--watchdog", nargs="+", choices=["branch", "main"], default=["branch"])
    parser.add_argument("--n", type=int, default=3)
    args = parser.parse_args()
    for watchdog in args.watchdog:
        options: dict[str, Any] = {} if watchdog == "branch" else {
            "ping_interval_s": 20.0, "ping_timeout_s": 20.0, "turn_silent_s": 1e9}
        for kind in args.audio:
            times = [await trial(kind, options) for _ in range(args.n)]
            print(f"watchdog={watchdog} audio={kind} detect_s={[round(t, 2) for t in times]} "
                  f"median={statistics.median(times):.2f}")


if __name__ == "__main__":
    asyncio.run(main())
