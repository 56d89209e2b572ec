"""N RTP legs sending paced G.711 to a UDP sink for T seconds; prints JSON figures.

    .venv/bin/python bench/rtp_pacing.py --legs 200 --seconds 20 --mode echo

Modes: ``play`` (each leg plays a long tone), ``echo`` (the sink also sends 20 ms RTP to every
leg and each leg runs the echo agent: the full receive -> jitter buffer -> agent -> paced send
path). ``--impl aiortp`` runs the same ``play`` load on aiortp's own per-session paced sender,
for comparison.

The sink runs in a separate process and timestamps packets in the kernel (SO_TIMESTAMPNS), so
the intervals are those on the wire, not the sink's scheduling. Reported: outgoing interval
p50/p99/max per leg stream (ms), packets and sequence gaps seen by the sink, the legs' process
CPU (% of one core) and RSS over the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
WARMUP_S = 2.0


def _cpu_seconds() -> float:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(key: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the sink, which in echo mode also plays the callers (a separate process) -----------------
def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def sink_main(conn: Connection, cpu: int | None = None, callers: bool = False) -> None:
    """Receive until a 1-byte datagram says stop; kernel arrival time per packet. With
    ``callers`` the same socket also plays the callers (echo mode): 20 ms PCMU packets to every
    leg port, so the legs see their packets come from the address they send to (the SDP's), as
    from a real caller; another socket's packets would be refused as a foreign source."""
    _pin(cpu)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind(("127.0.0.1", 0))
    conn.send(sock.getsockname()[1])
    ports: list[int] = conn.recv() if callers else []
    seconds: float = conn.recv() if callers else 0.0
    payload = bytes(range(160))
    start = next_send = time.monotonic()
    sent = 0
    cmsg_space = socket.CMSG_SPACE(16)
    raw: list[tuple[bytes, bytes]] = []
    sock.setblocking(False)
    # Poll on a 1 ms timer instead of blocking: a blocked reader would be woken by every
    # packet, and on a VM that wake-up (an IPI) is billed to the sending process, inflating
    # the legs' CPU figure. Arrival times come from the kernel either way.
    running = True
    while running:
        now = time.monotonic()
        if ports and now >= next_send and now - start < seconds:
            for i, port in enumerate(ports):
                header = struct.pack("!BBHII", 0x80, 0, sent & 0xFFFF, (sent * 160) & 0xFFFFFFFF, 0x1000 + i)
                try:
                    sock.sendto(header + payload, ("127.0.0.1", port))
                except BlockingIOError:
                    pass  # a full send buffer: that packet is lost, as on a network
            sent += 1
            next_send = start + sent * 0.02
        while True:
            try:
                data, anc, _flags, _addr = sock.recvmsg(2048, cmsg_space)
            except BlockingIOError:
                break
            if len(data) == 1:
                running = False
                break
            if len(data) < 12 or 192 <= data[1] <= 223:
                continue
            stamp = anc[0][2] if anc else struct.pack("qq", *divmod(time.time_ns(), 10**9))
            raw.append((stamp, data[2:12]))
        time.sleep(0.001)
    arrivals: dict[int, list[tuple[float, int]]] = {}
    for stamp, head in raw:
        sec, nsec = struct.unpack("qq", stamp[:16])
        seq, _ts, ssrc = struct.unpack("!HII", head)
        arrivals.setdefault(ssrc, []).append((sec + nsec / 1e9, seq))
    conn.send(arrivals)


# -- the legs (this process) ----------------------------------------------------------------
async def run_legs(args: argparse.Namespace, sink_port: int, source: Connection | None) -> dict[str, float]:
    from bridge.agents.echo import run_echo
    from bridge.callmodel import MediaParams
    from bridge.media.ports import PortAllocator
    from bridge.media.rtp_leg import RtpLeg
    from bridge.settings.media import MediaSettings

    # No latching: the callers send from the sink's socket, the SDP address.
    settings = MediaSettings(
        rtp_port_min=args.port_base, rtp_port_max=args.port_base + 2 * args.legs + 40, symmetric_rtp=False
    )
    ports = PortAllocator(settings.rtp_port_min, settings.rtp_port_max)
    legs = [await RtpLeg.open(f"bench-{i}", "127.0.0.1", ports, settings) for i in range(args.legs)]
    pt = 0 if args.codec == "PCMU" else 8
    for leg in legs:
        leg.start(MediaParams("127.0.0.1", sink_port, args.codec, pt, 101))
    agents = []
    feeder = None
    totals: dict[str, float] = {}
    if args.mode == "echo":
        assert source is not None
        source.send([leg.local_port for leg in legs])
        source.send(args.seconds)
        agents = [asyncio.create_task(run_echo(leg)) for leg in legs]
    else:
        t = np.arange(8000) / 8000
        second = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()

        async def feed() -> None:  # like a TTS stream: a second of audio whenever < 2 s is queued
            while True:
                for leg in legs:
                    if leg.queued_ms() < 2000:
                        leg.play("tone", second)
                await asyncio.sleep(0.5)

        feeder = asyncio.create_task(feed())

    async def close() -> None:
        if feeder is not None:
            feeder.cancel()
        keys = ("packets_in", "packets_out", "lost", "late", "concealed_frames", "skipped_frames",
                "foreign", "frames_dropped")
        totals.update({f"legs_{k}": sum(leg.stats()[k] for leg in legs) for k in keys})
        for leg in legs:
            await leg.close()
        await asyncio.gather(*agents, return_exceptions=True)

    return {**await _measure(args, close), **totals}


async def run_aiortp(args: argparse.Namespace, sink_port: int, source: Connection | None) -> dict[str, float]:
    from aiortp import RTPSession

    sessions = [
        await RTPSession.create(("127.0.0.1", 0), ("127.0.0.1", sink_port), 0, paced=True)
        for _ in range(args.legs)
    ]
    frame = (np.sin(2 * np.pi * 440 * np.arange(160) / 8000) * 8000).astype("<i2").tobytes()

    async def feed(session: RTPSession) -> None:
        while True:
            while session.stats.get("queue_depth", 0) < 10:
                session.send_audio_pcm_auto(frame)
            await asyncio.sleep(0.1)

    feeders = [asyncio.create_task(feed(s)) for s in sessions]

    async def close() -> None:
        for f in feeders:
            f.cancel()
        await asyncio.gather(*feeders, return_exceptions=True)
        for s in sessions:
            await s.close()

    return await _measure(args, close)


async def _measure(args: argparse.Namespace, close: Callable[[], Awaitable[None]]) -> dict[str, float]:
    await asyncio.sleep(WARMUP_S)
    c0, t0 = _cpu_seconds(), time.monotonic()
    await asyncio.sleep(args.seconds - WARMUP_S)
    c1, t1 = _cpu_seconds(), time.monotonic()
    rss = _rss_mib()
    await close()
    return {"cpu_pct_one_core": round(100 * (c1 - c0) / (t1 - t0), 1), "rss_mib": round(rss, 1)}


def _intervals(arrivals: dict[int, list[tuple[float, int]]]) -> dict[str, float]:
    gaps: list[np.ndarray] = []
    seq_gaps = 0
    packets = 0
    for items in arrivals.values():
        times = np.array([t for t, _ in items])
        if len(times) < 3:
            continue
        keep = times >= times[0] + WARMUP_S  # each stream past its own start-up
        seqs = np.array([s for _, s in items])[keep]
        times = times[keep]
        packets += len(times)
        seq_gaps += int(np.sum((np.diff(seqs) % 65536) != 1))
        gaps.append(np.diff(times) * 1000)
    all_gaps = np.concatenate(gaps) if gaps else np.zeros(1)
    return {
        "streams": len(gaps),
        "packets": packets,
        "sequence_gaps": seq_gaps,
        "interval_ms_p50": round(float(np.percentile(all_gaps, 50)), 2),
        "interval_ms_p99": round(float(np.percentile(all_gaps, 99)), 2),
        "interval_ms_p999": round(float(np.percentile(all_gaps, 99.9)), 2),
        "interval_ms_max": round(float(all_gaps.max()), 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--legs", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--mode", choices=["play", "echo"], default="echo")
    ap.add_argument("--impl", choices=["bridge", "aiortp"], default="bridge")
    ap.add_argument("--codec", choices=["PCMU", "PCMA"], default="PCMU")
    ap.add_argument("--port-base", type=int, default=24000)
    ap.add_argument(
        "--no-pin", action="store_true",
        help="do not pin the legs to the first CPU and the sink/source to the last one "
        "(pinned is how one daemon per core runs)",
    )
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    pinned = not args.no_pin and len(cpus) >= 2
    legs_cpu, peer_cpu = (cpus[0], cpus[-1]) if pinned else (None, None)
    if args.impl == "aiortp":
        args.mode = "play"

    ctx = mp.get_context("spawn")
    sink_conn, sink_child = ctx.Pipe()
    sink = ctx.Process(target=sink_main, args=(sink_child, peer_cpu, args.mode == "echo"), daemon=True)
    sink.start()
    sink_port = sink_conn.recv()
    source_conn = sink_conn if args.mode == "echo" else None
    runner = run_aiortp if args.impl == "aiortp" else run_legs
    _pin(legs_cpu)
    proc = asyncio.run(runner(args, sink_port, source_conn))
    stop = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stop.sendto(b"!", ("127.0.0.1", sink_port))
    stop.close()
    arrivals = sink_conn.recv()
    sink.join(5)
    result = {
        "impl": args.impl,
        "mode": args.mode,
        "legs": args.legs,
        "seconds": args.seconds,
        "codec": args.codec,
        "pinned": pinned,
        **_intervals(arrivals),
        **proc,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
