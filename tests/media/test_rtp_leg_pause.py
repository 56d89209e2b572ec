"""RtpLeg.pause()/resume() on 127.0.0.1 against a raw RTP peer: pausing stops the agent's
packets at the next tick and keeps the queue; resuming sends exactly the frames that were
left, so the caller hears every frame once, in order."""

from __future__ import annotations

import asyncio

from bridge.audio import g711
from bridge.leg import PlaybackDone, PlaybackProgress
from bridge.media.rtp_leg import RtpLeg
from bridge.settings.media import MediaSettings
from tests.media.support import Collector, RawPeer, allocator, media, started_leg, wait_until

SETTINGS = MediaSettings(jitter_buffer_ms=40)


def numbered_frames(n: int) -> bytes:
    """``n`` frames, frame i a constant level whose mu-law code is 0x80 + i: each frame comes
    back from the wire as exactly its own code."""
    return b"".join(g711.decoder("PCMU")(bytes([0x80 + i]) * 160) for i in range(n))


def frame_index(payload: bytes) -> int:
    assert len(set(payload)) == 1, "a frame mixes two frames' audio"
    return payload[0] - 0x80


async def test_pause_holds_the_queue_and_resume_sends_the_rest_once() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS)
    c = Collector.start(leg)
    leg.start(media(peer.port, "PCMU"))
    leg.play("u", numbered_frames(60))
    leg.end_utterance("u")
    assert await wait_until(lambda: len(peer.packets) >= 10)
    leg.pause()
    paused_at = leg.stats()["packets_out"]
    heard = leg.heard_ms("u")
    # the exact position is reported at the pause (the periodic reports come every 5 frames):
    # a confirmed barge-in cuts the history there
    assert await wait_until(lambda: any(p.heard_ms == heard for p in c.of(PlaybackProgress)))
    await asyncio.sleep(0.2)
    assert leg.stats()["packets_out"] <= paused_at + 1  # at most the frame of the current tick
    paused_out = leg.stats()["packets_out"]
    assert leg.heard_ms("u") == paused_out * 20 >= heard
    assert leg.queued_ms() == (60 - paused_out) * 20  # nothing dropped
    leg.resume()
    assert await wait_until(lambda: bool(c.of(PlaybackDone)))
    await leg.close()
    peer.close()
    await c.stop()
    assert [frame_index(p.pkt.payload) for p in peer.packets] == list(range(60))
    assert leg.heard_ms("u") == 1200
    # the talkspurt after the pause is marked as a new one
    assert peer.packets[paused_out].pkt.marker


async def test_clear_while_paused_drops_the_queue_and_unpauses() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS)
    leg.start(media(peer.port, "PCMU"))
    leg.play("a", numbered_frames(50))
    assert await wait_until(lambda: len(peer.packets) >= 5)
    leg.pause()
    await asyncio.sleep(0.06)
    leg.clear()
    assert leg.queued_ms() == 0
    before = len(peer.packets)
    leg.play("b", numbered_frames(5))
    assert await wait_until(lambda: len(peer.packets) >= before + 5)
    await leg.close()
    peer.close()



async def test_listen_mode_hands_each_caller_frame_on_as_it_arrives() -> None:
    """The conversation agent's leg (listen_on_arrival): a caller packet is a frame for the
    VAD at the next tick, not after the jitter buffer's depth; a sender that stops still
    gets the listener's time moving (concealment, then filler silence)."""
    peer, leg, c = await started_leg("c", SETTINGS)
    for i in range(8):
        peer.send(leg.local_port, 0, bytes([0x80 + i]) * 160)
        peer.ts = (peer.ts + 160) & 0xFFFFFFFF
        # with the playout buffer (40 ms here) frame i would wait for packets i+1..i+3
        assert await wait_until(lambda i=i: len(c.frames) == i + 1), f"frame {i} not handed on"
    decode = g711.decoder("PCMU")
    assert [f.pcm for f in c.frames] == [decode(bytes([0x80 + i]) * 160) for i in range(8)]
    assert await wait_until(lambda: len(c.frames) >= 20)  # the sender stopped: time goes on
    assert leg.stats()["filler_frames"] > 0
    await leg.close()
    peer.close()
    await c.stop()
