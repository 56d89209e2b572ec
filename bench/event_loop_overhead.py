"""CPU time of the event loop's own machinery on asyncio's loop and on uvloop; prints JSON.

Three loads the daemon is made of, each in one process on one loop, CPU time (not wall time,
so a busy machine blurs it less) divided by the operations done:
- timer wake-ups: 200 tasks sleeping 2 ms, 100 times each (the per-call timers and pacers);
- UDP datagrams: 172-byte datagrams (RTP size) sent from a plain socket to a DatagramProtocol
  endpoint in the same process, one loop pass each (the SIP socket's path; sender included);
- WebSocket round trips: 50 websockets connections to a websockets echo server in the same
  process, 400 binary 160-byte messages each (the Plivo stream path; both ends counted).

    .venv/bin/python bench/event_loop_overhead.py --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable

import websockets

from bridge import event_loop


async def timers(n_tasks: int = 200, ticks: int = 100) -> int:
    async def one() -> None:
        for _ in range(ticks):
            await asyncio.sleep(0.002)

    await asyncio.gather(*(one() for _ in range(n_tasks)))
    return n_tasks * ticks


async def udp(n: int = 40_000) -> int:
    loop = asyncio.get_running_loop()
    got = 0

    class Count(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            nonlocal got
            got += 1

    transport, _ = await loop.create_datagram_endpoint(Count, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for _ in range(n):
            while True:
                try:
                    sender.sendto(b"x" * 172, ("127.0.0.1", port))
                    break
                except BlockingIOError:
                    await asyncio.sleep(0)
            await asyncio.sleep(0)  # one loop pass a datagram: asyncio's loop reads one a pass
        last = -1
        while got != last:  # until nothing more arrives
            last = got
            await asyncio.sleep(0.1)
    transport.close()
    return got


async def ws(conns: int = 50, msgs: int = 400) -> int:
    async def echo(conn: websockets.ServerConnection) -> None:
        async for message in conn:
            await conn.send(message)

    async with websockets.serve(echo, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]

        async def client() -> None:
            async with websockets.connect(f"ws://127.0.0.1:{port}", compression=None) as conn:
                for _ in range(msgs):
                    await conn.send(b"y" * 160)
                    await conn.recv()

        await asyncio.gather(*(client() for _ in range(conns)))
    return conns * msgs


def cpu_us_per_op(loop: str, load: Callable[[], Awaitable[int]]) -> float:
    async def main() -> int:
        return await load()

    started = time.process_time()
    ops = event_loop.run(main(), loop)
    return round((time.process_time() - started) / max(ops, 1) * 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="alternate the loops this many times")
    args = parser.parse_args()
    loads: dict[str, Callable[[], Awaitable[int]]] = {
        "timer_wakeup": timers, "udp_datagram": udp, "websocket_round_trip": ws}
    out: dict[str, dict[str, list[float]]] = {name: {} for name in loads}
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, load in loads.items():
            for loop in event_loop.LOOP_NAMES[::-1]:  # asyncio first, then uvloop
                out[name].setdefault(loop, []).append(cpu_us_per_op(loop, load))
    print(json.dumps({"cpu_us_per_operation": out, "load_average_1m": {
        "before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}}, indent=2))


if __name__ == "__main__":
    main()
