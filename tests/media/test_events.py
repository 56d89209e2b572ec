"""The leg's event channel: order, bounded frames and digits, LegEnded last and exactly once."""

from __future__ import annotations

import asyncio

from bridge.leg import AudioFrame, DtmfDigit, LegEnded, PlaybackDone
from bridge.media.events import EventChannel


async def test_order_bound_and_a_single_final_legended() -> None:
    ch = EventChannel(max_frames=3)
    for i in range(5):
        ch.put(AudioFrame(bytes([i]) * 320, float(i)))
    ch.put(DtmfDigit("5", 100, 5.0))  # not dropped by the frame bound
    ch.put(LegEnded("bye", 6.0))
    ch.put(LegEnded("again", 7.0))
    ch.put(PlaybackDone("u", 0, 8.0))  # after the end: ignored
    got = [ev async for ev in ch.stream()]
    assert [type(e).__name__ for e in got] == ["AudioFrame"] * 3 + ["DtmfDigit", "LegEnded"]
    assert [e.pcm[0] for e in got if isinstance(e, AudioFrame)] == [0, 1, 2]
    assert ch.dropped_frames == 2
    assert got[-1] == LegEnded("bye", 6.0)
    assert [ev async for ev in ch.stream()] == []  # a finished channel stays finished


async def test_a_waiting_reader_wakes_up_and_can_be_cancelled() -> None:
    ch = EventChannel()
    stream = ch.stream()
    reader = asyncio.create_task(anext(stream))
    await asyncio.sleep(0)
    ch.put(DtmfDigit("1", 40, 0.0))
    assert (await asyncio.wait_for(reader, 1.0)) == DtmfDigit("1", 40, 0.0)
    waiting = asyncio.create_task(anext(stream))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    ch.put(LegEnded("x", 1.0))  # the cancelled wait lost nothing
    assert [ev async for ev in stream] == [LegEnded("x", 1.0)]


async def test_digits_are_bounded_apart_from_frames_and_the_bound_frees_as_they_are_read() -> None:
    """A peer can send DTMF as fast as it likes; an agent busy in a turn reads none: the
    channel keeps ``max_digits`` of them, drops (and counts) the newest, and takes digits again
    once they are read. Playback marks and LegEnded are never dropped."""
    ch = EventChannel(max_frames=2, max_digits=3)
    for i in range(5):
        ch.put(DtmfDigit(str(i), 100, float(i)))
    ch.put(PlaybackDone("u", 0, 5.0))
    assert ch.dropped_digits == 2
    first = await ch.next()
    assert first == DtmfDigit("0", 100, 0.0)
    ch.put(DtmfDigit("9", 100, 6.0))  # room again
    ch.put(DtmfDigit("8", 100, 7.0))
    ch.put(LegEnded("bye", 8.0))
    rest = [ev async for ev in ch.stream()]
    assert rest == [DtmfDigit("1", 100, 1.0), DtmfDigit("2", 100, 2.0), PlaybackDone("u", 0, 5.0),
                    DtmfDigit("9", 100, 6.0), LegEnded("bye", 8.0)]
    assert ch.dropped_digits == 3
