"""CPU time per 20 ms caller frame on the stream path's own code, for an A/B that a shared box
cannot spoil (process CPU time, not wall time): Plivo's media message parsed and decoded as
the StreamLeg does (receive side), and the frame sent by DeepgramStream.send to the fake
Deepgram, which runs in a child process so that only the client's work is counted (send side).
``stream_server_receive_us_per_frame``: the whole receive path on the wire, the daemon's
StreamServer with an agent that reads its leg's events, WIRE_CALLS streams from simulated
Plivo callers in a child process, each sending its media at Plivo's 20 ms pace (websockets'
frame parser, the message handling, the leg, the agent's wake-ups: what 150 calls pay 7500
times a second).

Usage: .venv/bin/python bench/stream_frame_cost.py [TREE]   (TREE: a checkout to measure,
default this one; e.g. main's, from `git archive`). Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

FRAMES = 3000  # 60 s of caller audio
WIRE_CALLS = 40
WIRE_FRAMES = 250  # 5 s a call at 20 ms


def serve_fake(conn: Connection, tree: str) -> None:
    """Child process: the fake cloud until the parent says stop."""
    sys.path.insert(0, tree)
    from devkit.fakes import FakeCloud

    async def main() -> None:
        async with FakeCloud() as cloud:
            conn.send(cloud.http_url)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    asyncio.run(main())


async def measure(url: str, frames: list[bytes]) -> tuple[float, float]:
    from bridge.providers.stt.deepgram_stt import DeepgramSTT
    from bridge.stream import protocol
    from devkit.fakes.server import DEEPGRAM_KEY

    decode = protocol.MediaFormat("audio/x-mulaw", 8000).decoder()
    # bytes: what the stream server hands the parser
    messages = [json.dumps({"event": "media", "sequenceNumber": i, "streamId": "s-1",
                            "media": {"track": "inbound", "timestamp": "1733090000000", "chunk": i,
                                      "payload": base64.b64encode(f).decode()}, "extra_headers": "{}"}
                           ).encode() for i, f in enumerate(frames)]
    cpu = time.process_time()
    pcms = []
    for m in messages:
        msg = protocol.parse(m)
        assert isinstance(msg, protocol.Media)
        pcms.append(decode(msg.payload))
    receive = (time.process_time() - cpu) / len(frames) * 1e6
    stream = await DeepgramSTT(api_key=DEEPGRAM_KEY, url=url).open()
    await asyncio.sleep(0.2)
    cpu = time.process_time()
    for n, pcm in enumerate(pcms):
        await stream.send(pcm)
        if n % 50 == 49:
            await asyncio.sleep(0)  # the socket's own work (writes, the fake's replies) runs too
    await asyncio.sleep(0.5)
    send = (time.process_time() - cpu) / len(frames) * 1e6
    await stream.close()
    return receive, send


def serve_callers(conn: Connection, tree: str, url: str, payloads: list[str]) -> None:
    """Child process: WIRE_CALLS streams; media at 20 ms once the parent says go."""
    sys.path.insert(0, tree)
    from websockets.asyncio.client import connect

    async def one(n: int, go: asyncio.Event) -> None:
        async with connect(url, compression=None) as ws:
            await ws.send(json.dumps({"event": "start", "sequenceNumber": 0, "start": {
                "callId": f"cost-{n}", "streamId": f"s-{n}", "accountId": "MA0", "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}, "extra_headers": ""}))
            await go.wait()
            loop = asyncio.get_running_loop()
            t0 = loop.time() + n * 0.02 / WIRE_CALLS  # spread over the 20 ms, as calls are
            for i in range(WIRE_FRAMES):
                await ws.send(f'{{"event": "media", "sequenceNumber": {i + 1}, "streamId": "s-{n}", "media": '
                              f'{{"track": "inbound", "timestamp": "1733090000000", "chunk": {i + 1}, '
                              f'"payload": "{payloads[i]}"}}, "extra_headers": ""}}')
                await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.02 - loop.time()))
            await asyncio.sleep(1.0)

    async def callers() -> None:
        go = asyncio.Event()
        calls = [asyncio.create_task(one(n, go)) for n in range(WIRE_CALLS)]
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        go.set()
        await asyncio.gather(*calls)

    asyncio.run(callers())


async def measure_wire(tree: str, frames: list[bytes]) -> float:
    from bridge.admission import Admission
    from bridge.leg import AudioFrame
    from bridge.settings import Secrets, Settings
    from bridge.stream.server import StreamServer
    from bridge.supervisor import CallSupervisor

    got = [0]

    async def agent(leg: Any, info: Any) -> None:
        async for ev in leg.events():
            if isinstance(ev, AudioFrame):
                got[0] += 1

    settings = Settings.model_validate({"daemon": {"stream_listen": "127.0.0.1:0"}, "plivo": {
        "stream_require_token": False, "stream_check_signature": False, "nonce_db": ":memory:"}})
    server = StreamServer(settings, Secrets(), CallSupervisor(agent, Admission(1000)))
    await server.start()
    payloads = [base64.b64encode(f).decode() for f in frames[:WIRE_FRAMES]]
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    url = f"ws://127.0.0.1:{server.bound_port}/stream"
    callers = ctx.Process(target=serve_callers, args=(child, tree, url, payloads), daemon=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, callers.start)
    try:
        for _ in range(1500):
            if server.active_calls >= WIRE_CALLS:
                break
            await asyncio.sleep(0.02)
        else:
            raise SystemExit("the callers did not connect")
        cpu = time.process_time()
        parent.send("go")
        total = WIRE_CALLS * WIRE_FRAMES
        for _ in range(3000):
            if got[0] >= total:
                break
            await asyncio.sleep(0.01)
        used = time.process_time() - cpu
        frames_seen = got[0]
    finally:
        await server.stop(drain_timeout_s=3.0)
        await loop.run_in_executor(None, callers.join, 10)
    return used / max(1, frames_seen) * 1e6


class _NullTransport:
    """What a connection writes to, without a socket: the bench counts Python's work only."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def writelines(self, chunks: list[bytes]) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def measure_socket(frames: list[bytes]) -> tuple[float, float]:
    """The stream socket's own work without system calls: (us per media message received,
    us per playAudio + checkpoint sent). WIRE_CALLS server connections (the server's own
    connection class, handshake done through websockets) each fed its caller's masked media
    frames one read at a time, as data_received gets them, through the server's reader to the
    leg (the CPU of the data_received calls: the agent tasks reading the legs are not counted);
    every 5th round each leg sends a 100 ms chunk (``_send_chunk``: encode, playAudio and
    checkpoint built, written)."""
    from websockets.asyncio.connection import Connection
    from websockets.frames import Frame, Opcode
    from websockets.server import ServerProtocol

    import bridge.stream.server as server_mod
    from bridge.leg import AudioFrame
    from bridge.settings import Secrets, Settings
    from bridge.stream import protocol
    from bridge.stream.leg import StreamLeg
    from bridge.stream.send_pacer import Chunk
    from bridge.supervisor import CallSupervisor

    conn_cls: Any = getattr(server_mod, "_StreamConnection", None)
    if conn_cls is None:  # moved to its own module
        from bridge.stream.connection import StreamConnection as conn_cls
    settings = Settings.model_validate({"daemon": {"stream_listen": "127.0.0.1:0"}, "plivo": {
        "stream_require_token": False, "stream_check_signature": False, "nonce_db": ":memory:"}})
    got = [0]

    async def agent(leg: StreamLeg) -> None:
        async for ev in leg.events():
            if isinstance(ev, AudioFrame):
                got[0] += 1

    server = server_mod.StreamServer(settings, Secrets(), CallSupervisor(lambda leg, info: agent(leg), None))  # type: ignore[arg-type]
    request = (b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    fmt = protocol.MediaFormat("audio/x-mulaw", 8000)
    conns, legs, tasks, transports = [], [], [], []
    for n in range(WIRE_CALLS):
        proto = ServerProtocol(max_size=65536)
        proto.receive_data(request)
        proto.send_response(proto.accept(proto.events_received()[0]))  # type: ignore[arg-type]
        proto.data_to_send()
        conn = conn_cls(proto, None, ping_interval=None)
        transport = _NullTransport()
        Connection.connection_made(conn, transport)  # not the server's: no handler task
        start = protocol.Start(f"cost-{n}", f"s-{n}", "MA0", fmt, "")
        leg = StreamLeg(conn, start)
        reader = server_mod._Reader(server, conn, leg, asyncio.get_running_loop().time())
        conn.on_text = reader.on_text
        conns.append(conn)
        legs.append(leg)
        transports.append(transport)
        tasks.append(asyncio.create_task(agent(leg)))
    wires = [[Frame(Opcode.TEXT, json.dumps({
        "event": "media", "sequenceNumber": i + 1, "streamId": f"s-{n}", "media": {
            "track": "inbound", "timestamp": "1733090000000", "chunk": i + 1,
            "payload": base64.b64encode(f).decode()}, "extra_headers": ""}).encode()).serialize(mask=True)
        for i, f in enumerate(frames[:WIRE_FRAMES])] for n in range(WIRE_CALLS)]
    pcm = bytes(1600)
    await asyncio.sleep(0)
    receive_cpu = send_cpu = 0.0
    chunks = 0
    for i in range(WIRE_FRAMES):
        t = time.process_time()
        for n in range(WIRE_CALLS):
            conns[n].data_received(wires[n][i])
        receive_cpu += time.process_time() - t
        await asyncio.sleep(0)  # the agents read their frames (not counted: the same either way)
        if i % 5 == 4:
            t = time.process_time()
            for leg in legs:
                await leg._send_chunk(Chunk("u", pcm, f"vb{i}"))
                chunks += 1
            send_cpu += time.process_time() - t
    await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    if got[0] != WIRE_CALLS * WIRE_FRAMES:
        raise SystemExit(f"the agents got {got[0]} of {WIRE_CALLS * WIRE_FRAMES} frames")
    return receive_cpu / got[0] * 1e6, send_cpu / chunks * 1e6


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    if len(sys.argv) > 1 and (sys.argv[1].startswith("-") or not Path(sys.argv[1], "bridge").is_dir()):
        # --help, or not a checkout: the child would fail to import and the parent wait for ever
        if sys.argv[1] in ("-h", "--help"):
            print(__doc__)
            raise SystemExit(0)
        raise SystemExit(f"not a checkout: {sys.argv[1]}")
    tree = str(Path(sys.argv[1]).resolve()) if len(sys.argv) > 1 else str(here)
    sys.path.insert(0, tree)
    rng = np.random.default_rng(1)
    frames = [bytes(rng.integers(0, 256, 160, dtype=np.uint8)) for _ in range(FRAMES)]
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    fake = ctx.Process(target=serve_fake, args=(child, tree), daemon=True)
    fake.start()
    try:
        receive, send = asyncio.run(measure(parent.recv(), frames))
    finally:
        parent.send(None)
        fake.join(5)
    logging.disable(logging.WARNING)  # the dev-mode warnings of the stream server
    sockets = [asyncio.run(measure_socket(frames)) for _ in range(3)]
    wire = asyncio.run(measure_wire(tree, frames))
    print(json.dumps({"tree": tree, "plivo_receive_us_per_frame": round(receive, 1),
                      "deepgram_send_us_per_frame": round(send, 1),
                      "stream_server_receive_us_per_frame": round(wire, 1),
                      # best of 3: the least disturbed by the box
                      "socket_receive_us_per_frame": round(min(r for r, _ in sockets), 2),
                      "socket_send_us_per_chunk": round(min(s for _, s in sockets), 2),
                      "wire_calls": WIRE_CALLS, "load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
