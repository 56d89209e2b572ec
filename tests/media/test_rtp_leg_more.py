"""More RtpLeg behaviour: Prometheus counters, in-band DTMF fallback, codec change on
re-INVITE, and a recvonly hold (the caller's music on hold still arrives)."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np

from bridge.audio import g711
from bridge.media.rtp_leg import RtpLeg
from bridge.metrics import RTP_LOST, RTP_PACKETS
from bridge.settings.media import MediaSettings
from tests.media.support import PT, Collector, RawPeer, allocator, media, wait_until


def sine(seconds: float, freq: float = 440.0) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return (np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes()


def _counter(metric: object, *labels: str) -> float:
    child = metric.labels(*labels) if labels else metric  # type: ignore[attr-defined]
    return float(child._value.get())


async def test_prometheus_counts_packets_both_ways_and_losses() -> None:
    before = (_counter(RTP_PACKETS, "in"), _counter(RTP_PACKETS, "out"), _counter(RTP_LOST))
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("m", "127.0.0.1", ports, MediaSettings())
    leg.start(media(peer.port, "PCMU"))
    leg.play("u", sine(0.2))
    await peer.send_audio(leg.local_port, sine(0.3), skip=frozenset({3, 7}))
    # every sent packet read (the last one may wait for the next tick), every frame played
    assert await wait_until(lambda: len(peer.packets) >= 10 and leg.stats()["packets_in"] >= 13)
    await leg.close()
    peer.close()
    after = (_counter(RTP_PACKETS, "in"), _counter(RTP_PACKETS, "out"), _counter(RTP_LOST))
    assert after[0] - before[0] == 13
    assert after[1] - before[1] == 10
    assert after[2] - before[2] == 2


async def test_send_dtmf_in_band_when_no_telephone_event_was_negotiated() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("d", "127.0.0.1", ports, MediaSettings())
    leg.start(media(peer.port, "PCMU", dtmf_pt=None))
    await asyncio.wait_for(leg.send_dtmf("5", duration_ms=200), 5.0)
    await leg.close()
    peer.close()
    audio = [r for r in peer.packets if r.pkt.payload_type == PT["PCMU"]]
    assert len(audio) == len(peer.packets) == 10
    pcm = np.frombuffer(b"".join(g711.ulaw_to_pcm(r.pkt.payload) for r in audio), dtype="<i2")
    spectrum = np.abs(np.fft.rfft(pcm.astype(float)))
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)
    top = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert abs(top[0] - 770) < 15 and abs(top[1] - 1336) < 15  # the two tones of "5"


async def test_a_reinvite_can_switch_the_codec_and_the_stream_stays_continuous() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("r", "127.0.0.1", ports, MediaSettings())
    leg.start(media(peer.port, "PCMU"))
    leg.play("u", sine(1.0))
    assert await wait_until(lambda: len(peer.packets) >= 5)
    leg.update(media(peer.port, "PCMA"))
    assert await wait_until(lambda: any(r.pkt.payload_type == 8 for r in peer.packets))
    await leg.close()
    peer.close()
    pts = [r.pkt.payload_type for r in peer.packets]
    switch = pts.index(8)
    assert set(pts[:switch]) == {0} and set(pts[switch:]) == {8}
    seqs = [r.pkt.sequence for r in peer.packets]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
    assert leg.stats()["codec"] == "PCMA"


async def test_recvonly_hold_delivers_the_callers_audio_but_sends_nothing() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("h", "127.0.0.1", ports, MediaSettings(jitter_buffer_ms=20))
    c = Collector.start(leg)
    leg.start(media(peer.port, "PCMU", direction="recvonly"))  # caller sent a=sendonly
    leg.play("u", sine(1.0))
    await peer.send_audio(leg.local_port, sine(0.4, 600.0))  # music on hold
    await asyncio.sleep(0.1)
    await leg.close()
    peer.close()
    await c.stop()
    assert not peer.packets
    loud = [f for f in c.frames if np.abs(np.frombuffer(f.pcm, dtype="<i2")).max() > 4000]
    assert len(loud) >= 15
    assert leg.heard_ms("u") == 0
