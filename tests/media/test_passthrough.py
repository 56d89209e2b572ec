"""A caller frame sent back in the codec it came in goes out as the caller's own payload
(bridge.media.codec.Passthrough): the echo agent on the wire, and the ring's bookkeeping."""

from __future__ import annotations

import asyncio

import pytest

from bridge.agents.echo import run_echo
from bridge.audio import g711
from bridge.media.codec import DECODERS, Passthrough, decode_ulaw_keeping
from bridge.media.rtp_leg import RtpLeg
from bridge.settings.media import MediaSettings
from tests.media.support import PT, RawPeer, allocator, media, wait_until

SETTINGS = MediaSettings(jitter_buffer_ms=40)


def _payloads(codec: str, frames: int) -> list[bytes]:
    """Frames of every code, among them those a decode/encode round trip changes (mu-law
    0x7F is -0 and comes back as 0xFF, +0)."""
    every = bytes(range(256)) * 2
    out = [every[(i * 37) % 256 :][:160] for i in range(frames)]
    if codec == "PCMU":
        assert g711.pcm_to_ulaw(g711.ulaw_to_pcm(bytes([0x7F]))) != bytes([0x7F])
    return out


def _burst(peer: RawPeer, port: int, pt: int, payloads: list[bytes]) -> None:
    """All the packets at once, 20 ms of timestamp apart: the jitter buffer holds them and
    plays one a tick, so none arrives after its slot however late the loop runs (paced
    sending on a busy machine could make one late, dropped and concealed)."""
    for payload in payloads:
        peer.send(port, pt, payload)
        peer.ts = (peer.ts + 160) & 0xFFFFFFFF


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
async def test_the_echo_sends_the_callers_payload_back_unchanged(codec: str) -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS)
    leg.start(media(peer.port, codec))
    echo = asyncio.create_task(run_echo(leg))
    sent = _payloads(codec, 25)
    _burst(peer, leg.local_port, PT[codec], sent)
    assert await wait_until(lambda: len(peer.audio(PT[codec])) >= len(sent) + 2, 3.0)
    await leg.close()
    await asyncio.wait_for(echo, 2.0)
    peer.close()
    echoed = [r.pkt.payload for r in peer.audio(PT[codec])]
    start = echoed.index(sent[0])
    assert echoed[start : start + len(sent)] == sent


async def test_a_frame_in_another_codec_than_ours_is_encoded_in_ours() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS)
    leg.start(media(peer.port, "PCMU"))  # we send PCMU; this caller sends PCMA anyway
    echo = asyncio.create_task(run_echo(leg))
    sent = _payloads("PCMA", 25)
    _burst(peer, leg.local_port, PT["PCMA"], sent)
    assert await wait_until(lambda: len(peer.audio(PT["PCMU"])) >= len(sent) + 2, 3.0)
    await leg.close()
    await asyncio.wait_for(echo, 2.0)
    peer.close()
    assert not peer.audio(PT["PCMA"])
    echoed = [r.pkt.payload for r in peer.audio(PT["PCMU"])]
    expected = [g711.pcm_to_ulaw(g711.alaw_to_pcm(p)) for p in sent]
    start = echoed.index(expected[0])
    assert echoed[start : start + len(sent)] == expected


def test_the_ring_knows_only_the_frames_it_keeps_and_forgets_the_oldest() -> None:
    ring = Passthrough(depth=2)
    decode = DECODERS[0]
    frames = [(decode(bytes([i]) * 160), bytes([i]) * 160) for i in range(7)]
    for pcm, payload in frames[:4]:
        ring.keep(pcm, payload)
    # every frame is known for at least ``depth`` frames after it came
    assert [ring.payload_of(pcm) for pcm, _ in frames[:4]] == [p for _, p in frames[:4]]
    assert ring.payload_of(bytes(bytearray(frames[0][0]))) is None  # equal bytes, another object
    for pcm, payload in frames[4:]:
        ring.keep(pcm, payload)
    assert [ring.payload_of(pcm) for pcm, _ in frames[:4]] == [None] * 4  # two generations on
    assert [ring.payload_of(pcm) for pcm, _ in frames[4:]] == [p for _, p in frames[4:]]
    ring.clear()
    assert ring.payload_of(frames[6][0]) is None


def test_the_keeping_decoder_is_the_plain_one_plus_the_payload() -> None:
    payload = bytes(range(256))
    pcm = decode_ulaw_keeping(payload)
    assert type(pcm) is g711.UlawPcm and pcm == DECODERS[0](payload) == g711.ulaw_to_pcm(payload)
    assert pcm.ulaw is payload and g711.as_ulaw(pcm) is payload
