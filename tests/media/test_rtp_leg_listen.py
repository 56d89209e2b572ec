"""Listen mode (RtpLeg.listen_on_arrival) on 127.0.0.1 against a raw RTP peer: the call
recording gets every caller frame the listener (VAD/STT) got, in order, after a burst too; a
block of stale packets is dropped, never handed to the listener a second time."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

from bridge.audio import g711
from bridge.settings.media import MediaSettings
from tests.media.support import allocator, started_leg, wait_until

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
    peer, leg, c = await started_leg("burst", settings)
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
    peer, leg, c = await started_leg("stale", MediaSettings(jitter_buffer_ms=40))
    seq0, ts0 = peer.seq, peer.ts

    def send(i: int, slot: int) -> None:
        ts = (ts0 + 160 * slot) & 0xFFFFFFFF
        peer.send(leg.local_port, 0, code_frame(i), ts=ts, seq=(seq0 + i) & 0xFFFF)

    def got() -> list[int | None]:
        return [n for n in (identify(f.pcm) for f in c.frames) if n is not None]

    # Bursts, not paced sends: a loaded box cannot make a packet late, only the stale ones are.
    for i in range(20):
        send(i, i)
    assert await wait_until(lambda: 19 in got())
    for i in range(10, 20):  # 200 ms of it again, at once, as it was sent (a delayed copy)
        send(i, i)
    for i in range(20, 25):  # then the sender goes on after a pause (600 ms later on its clock)
        send(i, 30 + i)
    assert await wait_until(lambda: 24 in got())
    assert got() == list(range(25))  # every frame once, in order: nothing stale again
    assert leg.stats()["late"] >= 10
    await leg.close()
    peer.close()
    await c.stop()


async def test_listen_mode_pcmu_frames_carry_the_payload_as_received() -> None:
    """The SIP conversation path: a PCMU caller frame keeps the bytes it came in
    (g711.UlawPcm), so the STT feed and Deepgram (encoding=mulaw) send them as received. A
    mu-law 0x7F (one of G.711's two zeros) shows the difference: encoding the decoded frame
    again gives 0xFF. Concealed and filler frames were never received: plain PCM."""
    from bridge.conversation.stt_feed import join_frames

    peer, leg, c = await started_leg("keep", MediaSettings(jitter_buffer_ms=40))
    sent = [bytes([0x7F, 0xFF, 0x80 + i, 0x00]) * 40 for i in range(6)]
    for payload in sent:
        peer.send(leg.local_port, 0, payload)
        peer.ts = (peer.ts + 160) & 0xFFFFFFFF
    assert await wait_until(lambda: len(c.frames) >= 12)  # the six, then concealment and filler
    await leg.close()
    peer.close()
    await c.stop()
    frames = [f.pcm for f in c.frames]
    assert all(type(f) is g711.UlawPcm for f in frames[:6])
    assert [f.ulaw for f in frames[:6]] == sent  # type: ignore[attr-defined]
    assert frames[:6] == [DECODE(p) for p in sent]
    assert g711.as_ulaw(join_frames(frames[:6])) == b"".join(sent)  # what Deepgram is sent
    assert g711.pcm_to_ulaw(frames[0]) != sent[0]  # re-encoding would not give these bytes
    assert all(type(f) is bytes for f in frames[6:])  # made here: concealment, then filler


async def test_frames_keep_no_payload_in_echo_mode_or_on_pcma() -> None:
    """The echo path keeps payloads beside the frames (codec.Passthrough), not on them; PCMA
    frames have no mu-law to keep."""
    ports = allocator(4)
    for listen, codec, pt in ((False, "PCMU", 0), (True, "PCMA", 8)):
        peer, leg, c = await started_leg("plain", MediaSettings(jitter_buffer_ms=20), codec, listen, ports)
        for i in range(4):
            peer.send(leg.local_port, pt, bytes([0x80 + i]) * 160)
            peer.ts = (peer.ts + 160) & 0xFFFFFFFF
        assert await wait_until(lambda c=c: len(c.frames) >= 2)
        await leg.close()
        peer.close()
        await c.stop()
        assert all(type(f.pcm) is bytes for f in c.frames), (listen, codec)
