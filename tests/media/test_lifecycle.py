"""Nothing outlives a leg: ports, sockets, tasks and the shared clock after close()."""

from __future__ import annotations

import asyncio
import os
import wave
from pathlib import Path

import numpy as np

from bridge.agents.echo import run_echo
from bridge.media.media_clock import clock_for_loop
from bridge.media.rtp_leg import RtpLeg
from bridge.settings.media import MediaSettings
from tests.media.support import Collector, RawPeer, allocator, media


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_200_open_close_cycles_leave_nothing_behind() -> None:
    ports = allocator(8)
    peer = await RawPeer.open()
    baseline_fds = _open_fds()
    baseline_tasks = set(asyncio.all_tasks())
    for i in range(200):
        leg = await RtpLeg.open(f"cycle-{i}", "127.0.0.1", ports, MediaSettings())
        if i % 2:  # half of them run: started, echo agent, a packet each way
            leg.start(media(peer.port, "PCMU"))
            agent = asyncio.create_task(run_echo(leg))
            peer.send(leg.local_port, 0, bytes(160))
            leg.play("x", bytes(320))
            await asyncio.sleep(0)
            await leg.close()
            await asyncio.wait_for(agent, 1.0)
        else:
            await leg.close()
    await asyncio.sleep(0.05)
    assert ports.in_use == 0
    assert set(asyncio.all_tasks()) == baseline_tasks
    assert len(clock_for_loop()) == 0
    assert _open_fds() == baseline_fds
    peer.close()


async def test_close_from_many_places_at_once_is_safe() -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    leg = await RtpLeg.open("c", "127.0.0.1", ports, MediaSettings())
    c = Collector.start(leg)
    leg.start(media(peer.port, "PCMU"))
    await asyncio.gather(leg.hangup("normal"), leg.close(), leg.hangup("again"), leg.close("bye"))
    await c.stop()
    ended = c.ended
    assert ended is not None and (ended.reason, ended.by) == ("normal", "agent")
    assert await leg.finished() == ended
    assert ports.in_use == 0 and len(clock_for_loop()) == 0
    # a dead leg ignores everything
    leg.play("u", bytes(3200))
    await leg.send_dtmf("1")
    assert await leg.transfer("sip:x@y") is False
    peer.close()


async def test_transfer_goes_to_the_callback() -> None:
    ports = allocator(1)
    leg = await RtpLeg.open("c", "127.0.0.1", ports, MediaSettings())
    assert await leg.transfer("sip:human@example.com") is False  # nobody to ask

    async def on_transfer(target: str) -> bool:
        return target == "sip:human@example.com"

    leg.on_transfer = on_transfer
    assert await leg.transfer("sip:human@example.com") is True
    await leg.close()


async def test_recording_holds_both_sides_time_aligned(tmp_path: Path) -> None:
    ports = allocator(2)
    peer = await RawPeer.open()
    settings = MediaSettings(recordings_dir=str(tmp_path / "rec"), jitter_buffer_ms=40)
    leg = await RtpLeg.open("call/with odd:chars@host", "127.0.0.1", ports, settings)
    leg.start(media(peer.port, "PCMU"))
    agent = asyncio.create_task(run_echo(leg))
    # the caller sends a click train: every 200 ms one loud frame
    pcm = bytearray(320 * 50)
    for k in range(0, 50, 10):
        pcm[k * 320 : (k + 1) * 320] = (np.ones(160) * 20000).astype("<i2").tobytes()
    await peer.send_audio(leg.local_port, bytes(pcm))
    await asyncio.sleep(0.2)
    path = leg.stats()["recording"]
    await leg.close()
    await asyncio.wait_for(agent, 1.0)
    peer.close()
    files = list((tmp_path / "rec").iterdir())
    assert [str(f) for f in files] == [path] and "/" not in Path(path).name[:-4].split("-", 1)[1]
    with wave.open(path) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    caller, agent_side = data[:, 0].astype(np.int32), data[:, 1].astype(np.int32)
    loud_caller = np.flatnonzero(np.abs(caller) > 10000)
    loud_agent = np.flatnonzero(np.abs(agent_side) > 10000)
    assert len(loud_caller) >= 5 * 150 and len(loud_agent) >= 5 * 150
    # The echo follows the caller by a short delay (the agent answers on the next tick)...
    delay = loud_agent[0] - loud_caller[0]
    assert 0 < delay <= 2 * 160
    # ...and each of the 5 clicks' echo stays right behind it: the two sides share one
    # timeline. (A starved test process may make the echo agent miss a tick: it then follows
    # a frame later, never earlier and never drifting away.)
    clicks = [loud[np.r_[0, np.flatnonzero(np.diff(loud) > 160) + 1]] for loud in (loud_caller, loud_agent)]
    assert len(clicks[0]) == len(clicks[1]) == 5
    assert all(0 < a - c <= 4 * 160 and (a - c) % 160 == delay % 160 for c, a in zip(*clicks, strict=True))
