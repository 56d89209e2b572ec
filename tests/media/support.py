"""Test helpers for the RTP leg: a raw UDP RTP peer, event collection, port ranges."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiortp import DtmfEvent

from bridge.audio import g711
from bridge.callmodel import Direction, MediaParams
from bridge.leg import AudioFrame, DtmfDigit, LegEnded, LegEvent
from bridge.media.ports import PortAllocator
from bridge.media.rtp_leg import RtpLeg
from bridge.media.rtp_packet import RtpHeader, build_rtp, is_rtcp, parse_rtp
from bridge.settings.media import MediaSettings

PT = {"PCMU": 0, "PCMA": 8}


def free_even_range(pairs: int) -> tuple[int, int]:
    """A random port range below the ephemeral range whose ports are free right now."""
    for _ in range(200):
        lo = random.randrange(21000, 32000 - 2 * pairs, 2)
        socks = []
        try:
            for port in range(lo, lo + 2 * pairs):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return lo, lo + 2 * pairs - 1
    raise RuntimeError("no free port range found")


def allocator(pairs: int = 20) -> PortAllocator:
    return PortAllocator(*free_even_range(pairs))


def media(port: int, codec: str = "PCMU", dtmf_pt: int | None = 101, direction: Direction = "sendrecv",
          host: str = "127.0.0.1") -> MediaParams:
    return MediaParams(host, port, codec, PT[codec], dtmf_pt, direction)  # type: ignore[arg-type]


@dataclass
class Received:
    t: float
    pkt: RtpHeader
    addr: tuple[str, int]


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, peer: RawPeer) -> None:
        self.peer = peer

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if is_rtcp(data):
            self.peer.rtcp.append(data)
            return
        self.peer.packets.append(Received(time.monotonic(), parse_rtp(data), addr))


class RawPeer:
    """A bare RTP endpoint on a UDP socket: sends hand-built packets, records what arrives."""

    def __init__(self) -> None:
        self.packets: list[Received] = []
        self.rtcp: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.ssrc = random.getrandbits(32)

    @classmethod
    async def open(cls, host: str = "127.0.0.1") -> RawPeer:
        """Bound on ``host`` (any 127.0.0.0/8 address works on Linux: a 'third address')."""
        peer = cls()
        loop = asyncio.get_running_loop()
        peer.transport, _ = await loop.create_datagram_endpoint(
            lambda: _Proto(peer), local_addr=(host, 0)
        )
        return peer

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def send(self, to: int, pt: int, payload: bytes, ts: int | None = None, marker: bool = False,
             seq: int | None = None) -> None:
        assert self.transport is not None
        data = build_rtp(pt, self.seq if seq is None else seq, self.ts if ts is None else ts, self.ssrc,
                         payload, marker)
        self.transport.sendto(data, ("127.0.0.1", to))
        if seq is None:
            self.seq = (self.seq + 1) & 0xFFFF

    async def send_audio(self, to: int, pcm: bytes, codec: str = "PCMU", skip: frozenset[int] = frozenset(),
                         interval: float = 0.02) -> int:
        """Send pcm as 20 ms packets at real time; packet indexes in ``skip`` are 'lost'
        (sequence and timestamp still advance). Returns the number of packets."""
        enc = g711.encoder(codec)
        n = len(pcm) // 320
        start = time.monotonic()
        for i in range(n):
            if i not in skip:
                self.send(to, PT[codec], enc(pcm[i * 320 : (i + 1) * 320]))
            else:
                self.seq = (self.seq + 1) & 0xFFFF
            self.ts = (self.ts + 160) & 0xFFFFFFFF
            await asyncio.sleep(max(0.0, start + (i + 1) * interval - time.monotonic()))
        return n

    async def send_digit(self, to: int, pt: int, code: int, duration: int = 800) -> None:
        """An RFC 4733 event: updates every 20 ms, then three end packets (same timestamp)."""
        ts = self.ts
        d = 160
        first = True
        while d < duration:
            self.send(to, pt, DtmfEvent(code, False, 10, d).serialize(), ts=ts, marker=first)
            first = False
            d += 160
            await asyncio.sleep(0.02)
        for _ in range(3):
            self.send(to, pt, DtmfEvent(code, True, 10, duration).serialize(), ts=ts)
        self.ts = (self.ts + duration + 800) & 0xFFFFFFFF

    def audio(self, pt: int) -> list[Received]:
        return [r for r in self.packets if r.pkt.payload_type == pt]


@dataclass
class Collector:
    """Reads a leg's events in the background."""

    events: list[LegEvent] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, leg: object) -> Collector:
        c = cls()

        async def run() -> None:
            async for ev in leg.events():  # type: ignore[attr-defined]
                c.events.append(ev)

        c.task = asyncio.get_running_loop().create_task(run())
        return c

    @property
    def frames(self) -> list[AudioFrame]:
        return [e for e in self.events if isinstance(e, AudioFrame)]

    @property
    def digits(self) -> str:
        return "".join(e.digit for e in self.events if isinstance(e, DtmfDigit))

    @property
    def ended(self) -> LegEnded | None:
        return next((e for e in self.events if isinstance(e, LegEnded)), None)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    async def stop(self) -> None:
        if self.task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self.task, 2.0)


async def wait_until(cond: Callable[[], bool], limit_s: float = 5.0) -> bool:
    """Poll ``cond`` every 10 ms; False if it is still false after ``limit_s``."""
    for _ in range(int(limit_s / 0.01)):
        if cond():
            return True
        await asyncio.sleep(0.01)
    return cond()


async def started_leg(call_id: str, settings: MediaSettings, codec: str = "PCMU", listen: bool = True,
                      ports: PortAllocator | None = None) -> tuple[RawPeer, RtpLeg, Collector]:
    """An RtpLeg (in listen mode unless ``listen`` is False: RtpLeg.listen_on_arrival)
    started towards a new RawPeer, its events collected."""
    peer = await RawPeer.open()
    leg = await RtpLeg.open(call_id, "127.0.0.1", ports or allocator(2), settings)
    if listen:
        leg.listen_on_arrival()
    c = Collector.start(leg)
    leg.start(media(peer.port, codec))
    return peer, leg, c
