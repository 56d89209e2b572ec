"""The media clock's tick-driven receive under a burst, on real loopback sockets: several legs
each get a burst at once, mixed with a third party's packets; every caller packet is read
(at most 8 a tick per socket, the rest wait in the socket) and played in order, every foreign
one is counted and refused."""

from __future__ import annotations

from bridge.audio import g711
from bridge.media.rtp_leg import RtpLeg
from bridge.settings.media import MediaSettings
from tests.media.support import PT, Collector, RawPeer, allocator, media, wait_until

SETTINGS = MediaSettings(jitter_buffer_ms=40)
BURST = 30  # almost four ticks' worth of reads per socket


async def test_a_burst_on_several_legs_is_read_whole_and_in_order_and_strangers_are_refused() -> None:
    ports = allocator(6)
    legs, callers, collectors = [], [], []
    stranger = await RawPeer.open("127.0.0.3")
    for i in range(3):
        caller = await RawPeer.open()
        leg = await RtpLeg.open(f"c{i}", "127.0.0.1", ports, SETTINGS)
        collectors.append(Collector.start(leg))
        leg.start(media(caller.port, "PCMU"))
        legs.append(leg)
        callers.append(caller)
    payloads = [bytes([(16 * k + j) % 256 for j in range(160)]) for k in range(BURST)]
    for k, payload in enumerate(payloads):  # all at once, the three legs interleaved
        for leg, caller in zip(legs, callers, strict=True):
            caller.send(leg.local_port, PT["PCMU"], payload)
            caller.ts = (caller.ts + 160) & 0xFFFFFFFF
            if k % 6 == 0:
                stranger.send(leg.local_port, PT["PCMU"], bytes(160))
    assert await wait_until(lambda: all(len(c.frames) >= BURST + 2 for c in collectors), 5.0)
    for leg in legs:
        await leg.close()
    for c in collectors:
        await c.stop()
    for caller in (*callers, stranger):
        caller.close()
    expected = [g711.ulaw_to_pcm(p) for p in payloads]
    for leg, c in zip(legs, collectors, strict=True):
        stats = leg.stats()
        assert stats["packets_in"] == BURST and stats["foreign"] == BURST // 6
        assert stats["lost"] == 0 and stats["late"] == 0
        frames = [f.pcm for f in c.frames]
        start = frames.index(expected[0])
        assert frames[start : start + BURST] == expected


async def test_the_burst_is_spread_over_ticks_not_read_in_one() -> None:
    """The 8-a-tick bound holds per socket: a 30-packet burst takes at least four ticks to
    read, and the leg's frames still come one per tick."""
    ports = allocator(2)
    caller = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS)
    seen: list[int] = []
    read_one = leg.on_readable

    def counting(now: float) -> None:
        seen.append(leg._clock.ticks)
        read_one(now)

    leg.on_readable = counting  # type: ignore[method-assign]
    c = Collector.start(leg)
    leg.start(media(caller.port, "PCMU"))
    for _ in range(BURST):
        caller.send(leg.local_port, PT["PCMU"], bytes(range(160)))
        caller.ts = (caller.ts + 160) & 0xFFFFFFFF
    assert await wait_until(lambda: leg.stats()["packets_in"] == BURST, 5.0)
    await leg.close()
    await c.stop()
    caller.close()
    per_tick = [seen.count(t) for t in sorted(set(seen))]
    assert max(per_tick) <= 8 and len(per_tick) >= 4
