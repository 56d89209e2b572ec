"""CPU time per call per 20 ms tick of the SIP echo media path, in one process; prints JSON.

    .venv/bin/python bench/echo_tick_cost.py [--legs 200] [--ticks 400] [--tree DIR] [--stt]

N RtpLegs on loopback, each running the daemon's echo agent, and one caller socket that sends
every leg one 20 ms PCMU packet a tick from the leg's SDP address (the echo comes back to
it and is dropped by the kernel: a 1-byte receive buffer, as the SIPp callers' media ports in
bench/sip_concurrency.py). The media clock's tick is run directly (no timer), then the loop
runs once so the agents take their frames. Timed with the thread's CPU time around the tick
and the agents' turn only: the callers' sends are not counted. CPU time, not wall time, so a
busy shared box blurs it little; ``--tree`` measures another checkout (e.g. a ``git archive``
of main) for a back-to-back A/B.

``--stt``: the SIP conversation path up to the STT's bytes instead of the echo: each leg in
listen mode (``listen_on_arrival``) and, in place of the echo agent, its caller frames
through the engine's SttFeed (``stt.send_chunk_ms`` chunks) into the real DeepgramStream.send
with encoding=mulaw and no socket (the bytes go to its replay buffer, as when a socket is
being opened): the decode on the leg, the chunk join and the mu-law Deepgram is sent.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import socket
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any


async def stt_listener(leg: Any, chunk_ms: int) -> int:
    """The conversation engine's caller-audio path to Deepgram, without the VAD or a socket."""
    from bridge.conversation.stt_feed import SttFeed
    from bridge.leg import AudioFrame, LegEnded
    from bridge.providers.stt.deepgram_stt import DeepgramStream, DeepgramSTT

    stream = DeepgramStream(DeepgramSTT(api_key="bench", encoding="mulaw"))
    feed = SttFeed(chunk_ms)
    chunks = 0
    async for event in leg.events():
        if isinstance(event, AudioFrame):
            if feed.audio(event.pcm):
                for pcm, _final in feed.take():
                    await stream.send(pcm)
                    chunks += 1
        elif isinstance(event, LegEnded):
            break
    return chunks


async def measure(legs_n: int, ticks: int, warmup: int, codec: str, stt: bool) -> dict[str, object]:
    from bridge.agents.echo import run_echo
    from bridge.callmodel import MediaParams
    from bridge.media import media_clock
    from bridge.media.ports import PortAllocator
    from bridge.media.rtp_leg import RtpLeg
    from bridge.settings.media import MediaSettings
    from bridge.settings.providers import SttSettings
    from bridge.simulator.procs import free_rtp_range

    loop = asyncio.get_running_loop()
    gc.freeze()  # as the daemon does once started: only the calls' objects are scanned
    # The legs' clock, with a timer that never fires: this bench runs its ticks itself.
    clock = media_clock.MediaClock(loop, interval=3600.0)
    media_clock._clocks[loop] = clock
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    caller.bind(("127.0.0.1", 0))
    caller_port = caller.getsockname()[1]
    lo, hi = free_rtp_range(2 * legs_n + 40)  # ports nobody holds now
    settings = MediaSettings(rtp_port_min=lo, rtp_port_max=hi)
    ports = PortAllocator(settings.rtp_port_min, settings.rtp_port_max)
    pt = 0 if codec == "PCMU" else 8
    legs = [await RtpLeg.open(f"cost-{i}", "127.0.0.1", ports, settings) for i in range(legs_n)]
    chunk_ms = SttSettings().send_chunk_ms
    for leg in legs:
        if stt:
            leg.listen_on_arrival()
        leg.start(MediaParams("127.0.0.1", caller_port, codec, pt, 101))
    agents = [asyncio.create_task(stt_listener(leg, chunk_ms) if stt else run_echo(leg)) for leg in legs]
    await asyncio.sleep(0)
    targets = [("127.0.0.1", leg.local_port) for leg in legs]
    payload = bytes(range(0, 256, 2)) + bytes(32)  # 160 bytes, varied samples
    cpu = 0.0
    per_tick: list[float] = []
    for n in range(warmup + ticks):
        for i, target in enumerate(targets):
            caller.sendto(struct.pack("!BBHII", 0x80, pt, n & 0xFFFF, n * 160, 0x1000 + i) + payload, target)
        t0 = time.thread_time()
        clock._tick(loop.time())
        await asyncio.sleep(0)  # the agents' wake-ups were scheduled by the tick: they run now
        if n >= warmup:
            spent = time.thread_time() - t0
            cpu += spent
            per_tick.append(spent)
    stats = [leg.stats() for leg in legs]
    for leg in legs:
        await leg.close()
    done = await asyncio.gather(*agents, return_exceptions=True)
    caller.close()
    return {
        "mode": "stt" if stt else "echo",
        "stt_chunks": sum(n for n in done if isinstance(n, int)),
        "legs": legs_n,
        "ticks": ticks,
        "us_per_call_tick": round(1e6 * cpu / (legs_n * ticks), 2),
        "cores_at_500_calls": round(500 * 50 * cpu / (legs_n * ticks), 3),
        # the median tick: less moved than the mean by the odd tick that a busy box slowed
        "us_per_call_tick_median": round(1e6 * statistics.median(per_tick) / legs_n, 2),
        "packets_in": sum(s["packets_in"] for s in stats),
        "packets_out": sum(s["packets_out"] for s in stats),
        "foreign": sum(s["foreign"] for s in stats),
        "clock_failures": clock.failures,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--legs", type=int, default=200)
    ap.add_argument("--ticks", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--codec", choices=["PCMU", "PCMA"], default="PCMU")
    ap.add_argument("--tree", type=Path, help="the checkout to measure (default: this one)")
    ap.add_argument("--stt", action="store_true", help="listen mode into Deepgram's send (see above)")
    args = ap.parse_args()
    tree = (args.tree or Path(__file__).resolve().parents[1]).resolve()
    sys.path.insert(0, str(tree))
    result = asyncio.run(measure(args.legs, args.ticks, args.warmup, args.codec, args.stt))
    print(json.dumps({"tree": str(tree), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
