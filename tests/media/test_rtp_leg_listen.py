"""Listen mode (RtpLeg.listen_on_arrival) on 127.0.0.1 against a raw RTP peer: the call
recording gets every caller frame the listener (VAD/STT) got, in order, after a burst too; a
block of stale packets is dropped, never handed to the listener a second time."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

from bridge.audio import g711
from bridge.media.rtp_leg import RtpLeg
from bridge.settings.media import MediaSettings
from tests.media.support import Collector, RawPeer, allocator, media, wait_until

DECODE = g711.decoder("PCMU")


def code_frame(i: int) -> bytes:
    """Frame i as the peer sends it: a constant mu-law code, 0x80 + i (all distinct, loud)."""
    return bytes([0x80 + i]) * 160


def identify(pcm: bytes) -> int | None:
    """Which sent frame ``pcm`` is exactly (concealment fades, so it is none of them)."""
    for i in range(100):
        if pcm == DECODE(code_frame(i)):
            return i
    return None


def caller_channel(path: Path) -> list[bytes]:
    with wave.open(str(path), "rb") as wav:
        data = wav.readframes(wav.getnframes())
    samples = struct.unpack(f"<{len(data) // 2}h", data)
    left = struct.pack(f"<{len(samples) // 2}h", *samples[0::2])
    return [left[i : i + 320] for i in range(0, len(left), 320)]


async def test_the_recording_gets_every_frame_of_a_burst_the_listener_got(tmp_path: Path) -> None:
    settings = MediaSettings(jitter_buffer_ms=40, recordings_dir=str(tmp_path))
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("burst", "127.0.0.1", ports, settings)
    leg.listen_on_arrival()
    c = Collector.start(leg)
    leg.start(media(peer.port, "PCMU"))
    for i in range(30):  # 600 ms of audio at once (a network burst): read 8 a tick, all ready
        peer.send(leg.local_port, 0, code_frame(i))
        peer.ts = (peer.ts + 160) & 0xFFFFFFFF
    assert await wait_until(lambda: len(c.frames) >= 40)  # the burst, then the sender's pause
    recording = leg.stats()["recording"]
    assert leg.stats()["frames_dropped"] == 0
    await leg.close()
    peer.close()
    await c.stop()
    heard = [f.pcm for f in c.frames if any(f.pcm)]
    assert [identify(p) for p in heard[:30]] == list(range(30))
    recorded = [row for row in caller_channel(Path(recording)) if any(row)]
    assert recorded == heard  # every frame the listener got, in order, nothing else


async def test_a_stale_block_is_not_handed_to_the_listener_again() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("stale", "127.0.0.1", ports, MediaSettings(jitter_buffer_ms=40))
    leg.listen_on_arrival()
    c = Collector.start(leg)
    leg.start(media(peer.port, "PCMU"))
    seq0, ts0 = peer.seq, peer.ts

    def send(i: int) -> None:
        peer.send(leg.local_port, 0, code_frame(i), ts=(ts0 + 160 * i) & 0xFFFFFFFF, seq=(seq0 + i) & 0xFFFF)

    def got() -> list[int | None]:
        return [n for n in (identify(f.pcm) for f in c.frames) if n is not None]

    for i in range(20):
        send(i)
        assert await wait_until(lambda i=i: i in got()), f"frame {i} not handed on"
    for i in range(10, 20):  # 200 ms of it again, at once, as it was sent (a delayed copy)
        send(i)
    for i in range(20, 25):
        send(i)
        assert await wait_until(lambda i=i: i in got()), f"frame {i} not handed on"
    assert got() == list(range(25))  # every frame once, in order: nothing stale again
    assert leg.stats()["late"] >= 10
    await leg.close()
    peer.close()
    await c.stop()
