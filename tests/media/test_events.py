"""The leg's event channel: order, bounded frames and digits, LegEnded last and exactly once."""

from __future__ import annotations

import asyncio

import pytest

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


# -- push mode (AudioLeg.consume): a plain function takes each event as it is put -------------

def _frame(i: int) -> AudioFrame:
    return AudioFrame(bytes([i]) * 320, float(i))


def test_an_attached_consumer_starts_held_then_takes_each_event_as_it_is_put() -> None:
    ch = EventChannel()
    ch.put(_frame(0))  # before anyone consumes: queued
    got: list[object] = []
    feed = ch.attach(got.append)
    ch.put(_frame(1))
    assert got == []  # held until the consumer is set up
    feed.release()
    assert got == [_frame(0), _frame(1)]
    ch.put(_frame(2))  # no task, no loop pass: handed over in put() itself
    assert got[-1] == _frame(2)
    with pytest.raises(RuntimeError):
        ch.attach(got.append)  # one consumer at a time


def test_the_consumer_is_never_reentered_what_it_causes_comes_after_it() -> None:
    """A consumer that makes the leg report something (play() -> PlaybackStarted) gets that
    event once it has returned, after the events already waiting, in put order."""
    ch = EventChannel()
    seen: list[str] = []
    depth = [0]

    def consumer(event: object) -> None:
        depth[0] += 1
        assert depth[0] == 1, "re-entered"
        if isinstance(event, AudioFrame):
            seen.append(f"frame{event.pcm[0]}")
            ch.put(PlaybackDone(f"u{event.pcm[0]}", 0, 0.0))
        else:
            assert isinstance(event, PlaybackDone | LegEnded)
            seen.append(event.utterance_id if isinstance(event, PlaybackDone) else "end")
        depth[0] -= 1

    ch.attach(consumer).release()
    ch.put(_frame(1))
    ch.put(_frame(2))
    ch.put(LegEnded("bye", 3.0))
    assert seen == ["frame1", "u1", "frame2", "u2", "end"]


def test_while_held_frames_and_digits_queue_under_the_bounds_and_legended_comes_last_once() -> None:
    """A consumer waiting (a frame's silero window) holds the feed: later events queue behind
    it with the channel's bounds (newest frames and digits dropped and counted, marks and
    LegEnded kept), then go over in order on release; LegEnded exactly once, last."""
    ch = EventChannel(max_frames=3, max_digits=2)
    got: list[object] = []
    feed = ch.attach(got.append)
    feed.release()
    ch.put(_frame(0))
    feed.hold()  # the consumer waits for something
    for i in range(1, 6):
        ch.put(_frame(i))
    for d in "123":
        ch.put(DtmfDigit(d, 100, 9.0))
    ch.put(PlaybackDone("u", 0, 9.0))
    ch.put(LegEnded("bye", 10.0))
    ch.put(LegEnded("again", 11.0))
    ch.put(_frame(9))  # after the end: ignored
    assert got == [_frame(0)]
    assert ch.ended  # the owner's view does not wait for the consumer
    assert (ch.dropped_frames, ch.dropped_digits) == (2, 1)
    feed.hold()  # holds nest
    feed.release()
    assert len(got) == 1
    feed.release()
    assert got == [_frame(0), _frame(1), _frame(2), _frame(3), DtmfDigit("1", 100, 9.0),
                   DtmfDigit("2", 100, 9.0), PlaybackDone("u", 0, 9.0), LegEnded("bye", 10.0)]


def test_a_consumer_holding_from_inside_stops_the_hand_over_until_it_releases() -> None:
    ch = EventChannel()
    got: list[int] = []

    def consumer(event: object) -> None:
        assert isinstance(event, AudioFrame)
        got.append(event.pcm[0])
        if event.pcm[0] == 1:
            feed.hold()  # this frame's answer comes later

    feed = ch.attach(consumer)
    for i in range(4):
        ch.put(_frame(i))
    assert got == []
    feed.release()
    assert got == [0, 1]  # frame 1's consumer holds: 2 and 3 wait
    feed.release()
    assert got == [0, 1, 2, 3]


def test_a_failing_consumer_is_logged_and_the_next_events_still_go(caplog: pytest.LogCaptureFixture) -> None:
    ch = EventChannel()
    got: list[int] = []

    def consumer(event: object) -> None:
        assert isinstance(event, AudioFrame)
        if event.pcm[0] == 1:
            raise ValueError("bug")
        got.append(event.pcm[0])

    ch.attach(consumer).release()
    for i in range(3):
        ch.put(_frame(i))  # the leg's tick goes on
    assert got == [0, 2]
    assert "consumer failed" in caplog.text


async def test_detached_the_events_queue_again_for_the_async_iterator() -> None:
    ch = EventChannel(max_frames=2)
    got: list[object] = []
    feed = ch.attach(got.append)
    feed.release()
    ch.put(_frame(0))
    feed.hold()
    ch.put(_frame(1))
    feed.detach()
    feed.release()  # a release after detach (a window answered late) is harmless
    for i in range(2, 5):
        ch.put(_frame(i))
    ch.put(LegEnded("bye", 5.0))
    assert got == [_frame(0)]
    rest = [ev async for ev in ch.stream()]
    assert rest == [_frame(1), _frame(2), LegEnded("bye", 5.0)]
    assert ch.dropped_frames == 2


async def test_a_legended_handed_straight_to_the_consumer_leaves_the_channel_finished() -> None:
    """'A finished channel stays finished' (the first test) whichever way LegEnded was taken:
    handed straight over in put() to a consumer that then detaches, a later stream() ends at
    once instead of waiting for ever, as it does when LegEnded went over from the queue."""
    for queued in (False, True):
        ch = EventChannel()
        got: list[object] = []
        feed = ch.attach(got.append)
        if not queued:
            feed.release()
        ch.put(LegEnded("bye", 1.0))
        if queued:
            feed.release()
        assert got == [LegEnded("bye", 1.0)]
        feed.detach()
        reader = asyncio.create_task(anext(ch.stream()))
        for _ in range(5):
            await asyncio.sleep(0)
        done = reader.done()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        assert done, f"stream() waits for ever after LegEnded was taken ({queued=})"
