"""RtpLeg on 127.0.0.1 against another RtpLeg or a raw UDP RTP peer: audio both ways, echo,
clear(), playback accounting, DTMF both ways, latching, timeout, hold, loss concealment."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time

import numpy as np
import pytest
from aiortp import DtmfEvent

from bridge.agents.echo import run_echo
from bridge.audio import g711
from bridge.leg import (
    AudioLeg,
    LegEnded,
    PlaybackDone,
    PlaybackProgress,
    PlaybackStarted,
)
from bridge.media.rtp_leg import RtpLeg
from bridge.settings.media import MediaSettings
from tests.media.support import PT, Collector, RawPeer, allocator, media, wait_until
from tests.support.audio import best_correlation, chirp_pcm

SETTINGS = MediaSettings(jitter_buffer_ms=40)


def g711_round_trip(pcm: bytes, codec: str) -> bytes:
    return g711.decoder(codec)(g711.encoder(codec)(pcm))


def sine(seconds: float, freq: float = 440.0, amp: int = 8000) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return (np.sin(2 * np.pi * freq * t) * amp).astype("<i2").tobytes()


async def leg_pair(codec: str, settings: MediaSettings = SETTINGS) -> tuple[RtpLeg, RtpLeg]:
    ports = allocator(4)
    a = await RtpLeg.open("call-a", "127.0.0.1", ports, settings)
    b = await RtpLeg.open("call-b", "127.0.0.1", ports, settings)
    a.start(media(b.local_port, codec))
    b.start(media(a.local_port, codec))
    return a, b


async def test_rtp_leg_satisfies_the_audioleg_protocol() -> None:
    ports = allocator(1)
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS)
    assert isinstance(leg, AudioLeg)
    await leg.close()
    await leg.close()  # idempotent
    assert ports.in_use == 0


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
async def test_audio_both_ways_survives_g711(codec: str) -> None:
    a, b = await leg_pair(codec)
    ca, cb = Collector.start(a), Collector.start(b)
    chirp = chirp_pcm(1.0)
    tone = sine(1.0, 700.0)
    a.play("hello", chirp)
    a.end_utterance("hello")
    b.play("hi", tone)
    b.end_utterance("hi")
    assert await wait_until(lambda: bool(ca.of(PlaybackDone)) and bool(cb.of(PlaybackDone)))
    await asyncio.sleep(0.2)  # the receivers' jitter buffers drain
    await a.close()
    await b.close()
    await ca.stop()
    await cb.stop()
    assert all(len(f.pcm) == 320 for f in ca.frames + cb.frames)
    corr_ab, _ = best_correlation(g711_round_trip(chirp, codec), b"".join(f.pcm for f in cb.frames))
    corr_ba, _ = best_correlation(g711_round_trip(tone, codec), b"".join(f.pcm for f in ca.frames))
    assert corr_ab > 0.99 and corr_ba > 0.99
    sa, sb = a.stats(), b.stats()
    assert sa["codec"] == codec and sa["packets_out"] == 50 and sb["packets_in"] == 50
    assert sb["packets_out"] == 50 and sa["packets_in"] == 50
    assert sa["lost"] == 0 and sb["lost"] == 0
    assert isinstance(ca.events[-1], LegEnded) and len(ca.of(LegEnded)) == 1


async def test_packets_on_the_wire_have_continuous_timestamps_and_marker_at_talkspurts() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS)
    leg.start(media(peer.port, "PCMA"))
    leg.play("one", sine(0.2))
    leg.end_utterance("one")
    await wait_until(lambda: len(peer.packets) >= 10)
    await asyncio.sleep(0.1)  # three ticks of silence between the utterances
    leg.play("two", sine(0.1))
    leg.end_utterance("two")
    await wait_until(lambda: len(peer.packets) >= 15)
    await leg.close()
    peer.close()
    pk = [r.pkt for r in peer.packets]
    assert len(pk) == 15 and all(p.payload_type == PT["PCMA"] and len(p.payload) == 160 for p in pk)
    seqs = [p.sequence for p in pk]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
    ts = [p.timestamp for p in pk]
    steps = [(b - a) % (1 << 32) for a, b in itertools.pairwise(ts)]
    assert steps[:9] == [160] * 9 and steps[10:] == [160] * 4
    assert steps[9] > 160 and steps[9] % 160 == 0  # the pause shows as a timestamp jump
    assert [p.marker for p in pk] == [True] + [False] * 9 + [True] + [False] * 4


async def test_echo_agent_returns_what_was_sent() -> None:
    a, b = await leg_pair("PCMU")
    ca = Collector.start(a)
    echo = asyncio.create_task(run_echo(b))
    chirp = chirp_pcm(1.0)
    a.play("u", chirp)
    a.end_utterance("u")
    assert await wait_until(lambda: len(ca.frames) >= 80)
    await asyncio.sleep(0.3)
    await b.close()
    await asyncio.wait_for(echo, 2.0)  # the agent ends by itself on LegEnded
    await a.close()
    await ca.stop()
    echoed = b"".join(f.pcm for f in ca.frames)
    twice = g711_round_trip(g711_round_trip(chirp, "PCMU"), "PCMU")
    corr, lag = best_correlation(twice, echoed)
    assert corr > 0.99
    assert 0 < lag < 8000 * 0.4  # echo delay: jitter buffers plus a frame or two, not seconds


async def test_clear_stops_output_within_one_frame_and_heard_ms_stays() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS)
    c = Collector.start(leg)
    leg.start(media(peer.port, "PCMU"))
    leg.play("long", sine(5.0))
    assert await wait_until(lambda: len(peer.packets) >= 15)
    leg.clear()
    sent_at_clear = leg.stats()["packets_out"]
    heard = leg.heard_ms("long")
    await asyncio.sleep(0.2)
    assert leg.stats()["packets_out"] == sent_at_clear  # not one packet more
    assert len(peer.packets) <= sent_at_clear
    assert leg.heard_ms("long") == heard == sent_at_clear * 20
    leg.play("long", sine(1.0))  # late audio of the cleared reply is not played
    await asyncio.sleep(0.1)
    assert leg.stats()["packets_out"] == sent_at_clear
    await leg.close()
    peer.close()
    await c.stop()
    assert not c.of(PlaybackDone)


async def test_playback_events_and_heard_ms_match_the_wire() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS)
    c = Collector.start(leg)
    leg.start(media(peer.port, "PCMU"))
    leg.play("u", sine(0.25))  # 12.5 frames: the tail is padded
    leg.end_utterance("u")
    assert await wait_until(lambda: bool(c.of(PlaybackDone)))
    await asyncio.sleep(0.05)
    await leg.close()
    peer.close()
    await c.stop()
    started, done = c.of(PlaybackStarted), c.of(PlaybackDone)
    progress = c.of(PlaybackProgress)
    assert len(started) == 1 and len(done) == 1
    assert done[0].heard_ms == leg.heard_ms("u") == 250
    assert len(peer.packets) == 13
    assert [p.heard_ms for p in progress] == [100, 200]
    assert started[0].t <= progress[0].t <= done[0].t


async def test_dtmf_received_rfc4733_and_sip_info() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS)
    c = Collector.start(leg)
    leg.start(media(peer.port, "PCMU", dtmf_pt=96))
    for code in (1, 2, 3, 11):
        await peer.send_digit(leg.local_port, 96, code)
    assert await wait_until(lambda: len(c.digits) >= 4)
    leg.inject_dtmf("9", 120)
    leg.inject_dtmf("x", 120)  # not a digit: ignored with a log line
    assert await wait_until(lambda: len(c.digits) >= 5)
    await asyncio.sleep(0.05)
    await leg.close()
    peer.close()
    await c.stop()
    assert c.digits == "123#9"
    assert leg.stats()["dtmf_in"] == 5


async def test_send_dtmf_uses_the_negotiated_type_and_distinct_timestamps() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS)
    leg.start(media(peer.port, "PCMA", dtmf_pt=100))
    await asyncio.wait_for(leg.send_dtmf("12#"), 5.0)
    with pytest.raises(ValueError):
        await leg.send_dtmf("1z")
    await leg.close()
    peer.close()
    events = [(DtmfEvent.parse(r.pkt.payload), r.pkt) for r in peer.audio(100)]
    assert events and len(events) == len(peer.packets)
    stamps: dict[int, list[DtmfEvent]] = {}
    for ev, pkt in events:
        stamps.setdefault(pkt.timestamp, []).append(ev)
    assert len(stamps) == 3
    digits = "".join({1: "1", 2: "2", 11: "#"}[evs[0].event] for _, evs in sorted(stamps.items()))
    assert digits == "12#"
    assert all(sum(e.end for e in evs) == 3 for evs in stamps.values())


async def test_symmetric_rtp_latches_to_where_the_caller_really_sends_from() -> None:
    ports = allocator(2)
    announced = await RawPeer.open()  # the address in the SDP
    actual = await RawPeer.open()  # where the caller's packets really come from (NAT)
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS)
    leg.start(media(announced.port, "PCMU"))
    leg.play("u", sine(2.0))
    await wait_until(lambda: len(announced.packets) >= 3)
    sender = asyncio.create_task(actual.send_audio(leg.local_port, sine(0.3)))
    assert await wait_until(lambda: len(actual.packets) >= 10)
    before = len(announced.packets)
    await asyncio.sleep(0.1)
    await sender
    await leg.close()
    assert len(announced.packets) <= before + 1
    assert leg.stats()["remote"] == f"127.0.0.1:{actual.port}" and leg.stats()["latches"] == 1
    announced.close()
    actual.close()


async def test_stray_packets_from_another_source_do_not_steal_the_stream() -> None:
    ports = allocator(2)
    caller = await RawPeer.open()
    stranger = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS)
    leg.start(media(caller.port, "PCMU"))
    sender = asyncio.create_task(caller.send_audio(leg.local_port, sine(0.5)))
    await asyncio.sleep(0.2)
    for _ in range(5):
        stranger.send(leg.local_port, 0, bytes(160))
    await sender
    await leg.close()
    assert leg.stats()["foreign"] == 5 and leg.stats()["remote"] == f"127.0.0.1:{caller.port}"
    caller.close()
    stranger.close()


async def test_rtp_inactivity_is_reported_for_the_owner_to_end_the_call() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, MediaSettings(rtp_timeout_s=0.3))
    c = Collector.start(leg)
    leg.start(media(peer.port, "PCMU"))
    await peer.send_audio(leg.local_port, sine(0.2))
    ended = await asyncio.wait_for(leg.finished(), 5.0)
    await c.stop()
    # Reported, not acted on: "media" tells the owner the dialog is still up (it sends the BYE).
    assert (ended.reason, ended.by) == ("rtp-timeout", "media")
    assert c.ended == ended
    assert ports.in_use == 1  # the owner closes the leg once the call is over
    await leg.close()
    assert ports.in_use == 0
    peer.close()


async def test_hold_stops_sending_and_does_not_trip_the_timeout() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, MediaSettings(rtp_timeout_s=0.3))
    c = Collector.start(leg)
    leg.start(media(peer.port, "PCMU"))
    leg.play("u", sine(3.0))
    assert await wait_until(lambda: len(peer.packets) >= 5)
    leg.update(media(peer.port, "PCMU", direction="inactive"))  # the caller holds us
    held_at = len(peer.packets)
    await asyncio.sleep(1.2)  # four timeouts long, without a single caller packet
    assert len(peer.packets) <= held_at + 1
    assert c.ended is None
    leg.update(media(peer.port, "PCMU"))  # resume
    assert await wait_until(lambda: len(peer.packets) >= held_at + 5)
    heard = leg.heard_ms("u")
    await leg.close()
    peer.close()
    await c.stop()
    assert heard < 3000 - 1000  # what played during the hold was not heard
    assert c.ended is not None and c.ended.reason == "closed"


async def test_packet_loss_is_concealed_keeping_one_frame_per_20ms() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS)
    c = Collector.start(leg)
    leg.start(media(peer.port, "PCMU"))
    tone = sine(1.0)
    lost = frozenset({10, 11, 25, 40})
    await peer.send_audio(leg.local_port, tone, skip=lost)
    await asyncio.sleep(0.15)
    await leg.close()
    peer.close()
    await c.stop()
    stats = leg.stats()
    assert stats["lost"] == 4 and stats["packets_in"] == 46
    assert stats["concealed_frames"] >= 4
    frames = c.frames
    # The caller's 50 packet slots all come out as frames, concealed ones included,
    # and the audio around the gaps still matches the tone.
    audio = b"".join(f.pcm for f in frames)
    corr, _ = best_correlation(g711_round_trip(tone, "PCMU")[: 160 * 10], audio)
    assert corr > 0.99
    first_real = next(i for i, f in enumerate(frames) if any(f.pcm))
    assert len(frames) - first_real >= 50


async def test_malformed_and_unknown_packets_are_ignored() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS)
    c = Collector.start(leg)
    leg.start(media(peer.port, "PCMU"))
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for junk in (b"", b"\x00" * 5, b"\xff" * 40, bytes([0x80, 13]) + bytes(11)):
        raw.sendto(junk, ("127.0.0.1", leg.local_port))
    raw.close()
    await peer.send_audio(leg.local_port, sine(0.3))
    await asyncio.sleep(0.15)
    await leg.close()
    peer.close()
    await c.stop()
    stats = leg.stats()
    assert stats["malformed"] == 3 and stats["ignored"] == 1 and stats["packets_in"] == 15
    assert any(any(f.pcm) for f in c.frames)


async def test_send_silence_keeps_packets_flowing_between_utterances() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, MediaSettings(send_silence=True))
    leg.start(media(peer.port, "PCMU"))
    assert await wait_until(lambda: len(peer.packets) >= 10)
    await leg.close()
    peer.close()
    assert all(set(r.pkt.payload) == {0xFF} for r in peer.packets)  # mu-law silence
    assert [r.pkt.marker for r in peer.packets[:3]] == [True, False, False]


async def test_a_talkspurt_starts_at_once_and_timestamps_stay_on_the_wall_clock() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS)
    leg.start(media(peer.port, "PCMU"))
    await asyncio.sleep(0.1)
    sent_at: list[float] = []
    for i in range(5):  # five short replies with pauses between them
        await asyncio.sleep(0.013 * (i + 1))  # somewhere between two ticks
        sent_at.append(time.monotonic())
        before = len(peer.packets)
        leg.play(f"u{i}", sine(0.06))
        leg.end_utterance(f"u{i}")
        await wait_until(lambda before=before: len(peer.packets) >= before + 3)
        await asyncio.sleep(0.05)
    await leg.close()
    peer.close()
    starts = [r for r in peer.packets if r.pkt.marker]
    assert len(starts) == 5
    # The first packet left when play() was called, not at the next 20 ms tick.
    for t0, r in zip(sent_at, starts, strict=True):
        assert r.t - t0 < 0.010
    # No drift: RTP time between talkspurt starts matches the wall clock to within a frame.
    for a, b in itertools.pairwise(starts):
        rtp_s = ((b.pkt.timestamp - a.pkt.timestamp) % (1 << 32)) / 8000
        assert abs(rtp_s - (b.t - a.t)) <= 0.021
    # Within a talkspurt, consecutive timestamps step by one frame.
    pk = [r.pkt for r in peer.packets]
    for a, b in itertools.pairwise(pk):
        if not b.marker:
            assert (b.timestamp - a.timestamp) % (1 << 32) == 160


async def _spray(sprayer: RawPeer, port: int, packets: int) -> None:
    """A third party's flood: PCMU packets at our port, 1 ms apart (1000 packets/s)."""
    for _ in range(packets):
        sprayer.send(port, 0, bytes(160))
        await asyncio.sleep(0.001)


async def test_spray_from_a_third_address_at_call_start_and_mid_call_never_takes_the_audio() -> None:
    ports = allocator(2)
    caller = await RawPeer.open()
    sprayer = await RawPeer.open("127.0.0.2")
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS, signalling_ip="127.0.0.1")
    await _spray(sprayer, leg.local_port, 50)  # waiting in the socket before the answer
    leg.start(media(caller.port, "PCMU"))
    leg.play("u", sine(1.5))
    await _spray(sprayer, leg.local_port, 100)  # ahead of the caller's first packet
    await caller.send_audio(leg.local_port, sine(0.3))
    await asyncio.sleep(0.7)  # the caller pauses (silence suppression): the old latch gave way here
    await _spray(sprayer, leg.local_port, 100)
    assert await wait_until(lambda: leg.stats()["foreign"] == 250)  # all read, all refused
    await leg.close()
    assert sprayer.packets == []  # not one packet of the agent's audio went to the third party
    assert len(caller.packets) >= 50
    stats = leg.stats()
    assert stats["remote"] == f"127.0.0.1:{caller.port}" and stats["latches"] == 0
    assert stats["foreign"] == 250 and stats["packets_in"] == 15
    caller.close()
    sprayer.close()


async def test_nat_latches_once_to_the_signalling_ip_and_never_again_mid_call() -> None:
    ports = allocator(2)
    nat = await RawPeer.open("127.0.0.3")  # the caller's public address (its SIP came from here)
    same_host = await RawPeer.open("127.0.0.3")  # another port on that host, later in the call
    leg = await RtpLeg.open("c", "127.0.0.1", ports, SETTINGS, signalling_ip="127.0.0.3")
    leg.start(media(40000, "PCMU", host="127.0.0.4"))  # SDP: a private address we cannot reach
    leg.play("u", sine(2.0))
    await nat.send_audio(leg.local_port, sine(0.3))
    assert await wait_until(lambda: len(nat.packets) >= 5)
    await asyncio.sleep(0.6)
    await same_host.send_audio(leg.local_port, sine(0.2))
    assert await wait_until(lambda: leg.stats()["foreign"] == 10)
    await leg.close()
    assert same_host.packets == []
    stats = leg.stats()
    assert stats["remote"] == f"127.0.0.3:{nat.port}" and stats["latches"] == 1
    assert stats["foreign"] == 10
    nat.close()
    same_host.close()


async def test_no_latch_after_the_window_or_without_symmetric_rtp_but_a_reinvite_reopens_it() -> None:
    ports = allocator(2)
    late = await RawPeer.open()
    settings = MediaSettings(jitter_buffer_ms=40, rtp_latch_window_s=1.0)
    leg = await RtpLeg.open("c", "127.0.0.1", ports, settings, signalling_ip="127.0.0.1")
    leg.start(media(40000, "PCMU"))
    await asyncio.sleep(1.2)  # the window closed before any packet came
    await late.send_audio(leg.local_port, sine(0.1))
    assert await wait_until(lambda: leg.stats()["foreign"] == 5)
    leg.update(media(late.port + 2, "PCMU"))  # a re-INVITE names a new address: latch afresh
    leg.play("u", sine(1.0))
    await late.send_audio(leg.local_port, sine(0.1))
    assert await wait_until(lambda: len(late.packets) >= 3)
    assert leg.stats()["latches"] == 1 and leg.stats()["packets_in"] == 5
    await leg.close()

    strict = await RtpLeg.open("s", "127.0.0.1", ports, MediaSettings(symmetric_rtp=False))
    strict.start(media(40000, "PCMU"))
    await late.send_audio(strict.local_port, sine(0.1))
    assert await wait_until(lambda: strict.stats()["foreign"] == 5)
    assert strict.stats()["packets_in"] == 0
    await strict.close()
    late.close()
