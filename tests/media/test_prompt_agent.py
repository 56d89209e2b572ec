"""The prompt agent on a real RtpLeg: plays a WAV (any format), listens, then hangs up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from bridge.agents.prompt import run_prompt
from bridge.audio import g711
from bridge.audio.wavfile import read_wav_8k_mono, write_wav
from bridge.media.rtp_leg import RtpLeg
from bridge.settings.media import MediaSettings
from tests.media.support import RawPeer, allocator, media, wait_until
from tests.support.audio import best_correlation


def stereo_16k_tone(seconds: float) -> bytes:
    t = np.arange(int(16000 * seconds)) / 16000
    mono = (np.sin(2 * np.pi * 500 * t) * 9000).astype("<i2")
    return np.repeat(mono, 2).tobytes()  # L = R


async def test_prompt_plays_the_file_then_listens_then_hangs_up(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "prompt.wav", stereo_16k_tone(0.5), rate=16000, channels=2)
    expected = read_wav_8k_mono(wav)
    assert len(expected) == 2 * 4000
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("p", "127.0.0.1", ports, MediaSettings())
    leg.start(media(peer.port, "PCMU"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(run_prompt(leg, str(wav), listen_s=0.3), 10.0)
    elapsed = loop.time() - started
    ended = await leg.finished()  # the hang-up is reported; the call's owner sends the BYE
    assert (ended.reason, ended.by) == ("agent-finished", "agent")
    await leg.close()
    assert ports.in_use == 0
    assert elapsed >= 0.5 + 0.3 - 0.003  # uvloop's clock and timers count whole milliseconds
    assert len(peer.packets) == 25
    got = b"".join(g711.ulaw_to_pcm(r.pkt.payload) for r in peer.packets)
    corr, lag = best_correlation(g711.ulaw_to_pcm(g711.pcm_to_ulaw(expected)), got)
    assert corr > 0.99 and lag == 0
    peer.close()


async def test_prompt_stops_when_the_caller_hangs_up_first(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "long.wav", stereo_16k_tone(3.0), rate=16000, channels=2)
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("p", "127.0.0.1", ports, MediaSettings())
    leg.start(media(peer.port, "PCMA"))
    agent = asyncio.create_task(run_prompt(leg, str(wav), listen_s=5.0))
    assert await wait_until(lambda: len(peer.packets) >= 5)
    leg.end("bye")  # the caller's BYE, as the owner passes it on
    await asyncio.wait_for(agent, 2.0)
    ended = await leg.finished()
    assert (ended.reason, ended.by) == ("bye", "peer")  # no hang-up of ours to report
    await leg.close()
    peer.close()


async def test_an_unreadable_prompt_file_ends_the_call_cleanly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not audio at all")
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("p", "127.0.0.1", ports, MediaSettings())
    leg.start(media(peer.port, "PCMU"))
    await asyncio.wait_for(run_prompt(leg, str(bad), listen_s=5.0), 5.0)
    ended = await leg.finished()
    assert (ended.reason, ended.by) == ("error", "agent") and not peer.packets
    await leg.close()
    peer.close()
