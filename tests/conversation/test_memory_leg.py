"""MemoryLeg sends through the RTP leg's own PlaybackQueue and talkspurt rule, so what the driver
tests and benches see (frames, Started/Progress/Done, heard_ms) is what the RTP leg does."""

from __future__ import annotations

from bridge.leg import FRAME_BYTES, LegEvent, PlaybackDone, PlaybackProgress, PlaybackStarted
from bridge.media.playback import PlaybackQueue
from devkit.manual_clock import ManualClock
from devkit.memory_leg import MemoryLeg


def _pcm(n_bytes: int, value: int) -> bytes:
    return value.to_bytes(2, "little", signed=True) * (n_bytes // 2)


def _playback_events(leg: MemoryLeg) -> list[LegEvent]:
    return [e for e in leg.take_events() if isinstance(e, PlaybackStarted | PlaybackProgress | PlaybackDone)]


def test_a_partial_last_frame_is_padded_as_on_the_wire_and_only_its_audio_is_heard() -> None:
    clock = ManualClock()
    leg = MemoryLeg("c", clock)
    leg.play("a", _pcm(FRAME_BYTES + 100, 1000))  # one frame and 50 samples
    leg.end_utterance("a")
    for _ in range(4):
        leg.step()
        clock.advance(0.02)
    audio = leg.agent_audio("a")
    assert len(audio) == 2 * FRAME_BYTES  # the tail went out as a whole frame of silence after it
    assert audio[FRAME_BYTES + 100 :] == bytes(FRAME_BYTES - 100)
    assert leg.heard_ms("a") == (160 + 50) // 8  # the padding is not heard


def test_a_talkspurt_starts_at_play_and_takes_the_next_ticks_slot() -> None:
    clock = ManualClock()
    leg = MemoryLeg("c", clock)
    leg.step()
    clock.advance(0.005)
    leg.play("a", _pcm(3 * FRAME_BYTES, 500))
    assert [f.t for f in leg.sent] == [clock.now()]  # sent within play(), not at the next tick
    clock.advance(0.015)
    leg.step()  # the slot the early frame took: nothing more goes out
    assert len(leg.sent) == 1
    clock.advance(0.02)
    leg.step()
    assert len(leg.sent) == 2 and leg.sent[1].t == clock.now()


def test_each_frame_is_named_by_its_utterance_in_queue_order() -> None:
    clock = ManualClock()
    leg = MemoryLeg("c", clock)
    leg.pause()  # hold the queue so nothing leaves early: the order is the queue's alone
    leg.play("a", _pcm(FRAME_BYTES + FRAME_BYTES // 2, 1))  # a1 + half of a2
    leg.play("b", _pcm(2 * FRAME_BYTES, 2))  # b1 b2
    leg.play("a", _pcm(FRAME_BYTES // 2, 1))  # completes a2, queued after b
    leg.end_utterance("a")
    leg.end_utterance("b")
    assert leg.queued_ms() == 80
    leg.resume()
    for _ in range(6):
        leg.step()
        clock.advance(0.02)
    assert [f.utterance_id for f in leg.sent] == ["a", "b", "b", "a"]
    assert leg.agent_audio("b") == _pcm(2 * FRAME_BYTES, 2)
    assert leg.queued_ms() == 0


def test_the_playback_events_are_the_rtp_legs_queues() -> None:
    clock = ManualClock()
    leg = MemoryLeg("c", clock, progress_every=2)
    reference: list[LegEvent] = []
    queue = PlaybackQueue(reference.append, progress_every=2)
    leg.pause()
    for target_play, target_end in ((leg.play, leg.end_utterance), (queue.play, queue.end)):
        target_play("a", _pcm(5 * FRAME_BYTES + 40, 7))
        target_end("a")
        target_play("b", _pcm(FRAME_BYTES, 9))
    leg.resume()
    for _ in range(9):
        leg.step()
        queue.next_frame(clock.now(), True)
        clock.advance(0.02)
    assert _playback_events(leg) == reference
    assert leg.heard_ms("a") == queue.heard_ms("a") == (5 * 160 + 20) // 8


def test_clear_drops_the_queue_and_late_audio_of_a_cleared_reply() -> None:
    clock = ManualClock()
    leg = MemoryLeg("c", clock)
    leg.play("a", _pcm(10 * FRAME_BYTES, 3))
    leg.step()
    clock.advance(0.02)
    leg.step()
    leg.clear()
    leg.play("a", _pcm(FRAME_BYTES, 3))  # the cancelled reply's TTS still streaming
    leg.play("b", _pcm(FRAME_BYTES, 4))
    for _ in range(3):
        clock.advance(0.02)
        leg.step()
    assert [f.utterance_id for f in leg.sent] == ["a", "a", "b"]


async def test_realtime_legs_tick_on_the_rtp_legs_shared_media_clock() -> None:
    """In real time, every leg of the loop is stepped by the one media clock (one wake-up a
    tick for all legs, as RTP legs are), and a leg that ends leaves it."""
    import asyncio

    from bridge.leg import AudioFrame
    from bridge.media.media_clock import clock_for_loop

    legs = [MemoryLeg(f"c{i}") for i in range(3)]
    media = clock_for_loop(asyncio.get_running_loop())
    for leg in legs:
        leg.start_realtime()
    assert len(media) == 3
    for _ in range(500):  # until each leg has delivered a few caller frames (bounded)
        if all(sum(isinstance(e, AudioFrame) for e in leg._events._items) >= 3 for leg in legs):
            break
        await asyncio.sleep(0.01)
    counts = [sum(isinstance(e, AudioFrame) for e in leg._events._items) for leg in legs]
    assert min(counts) >= 3, counts
    await legs[0].remote_hangup()
    assert len(media) == 2
    for leg in legs[1:]:
        await leg.aclose()
    assert len(media) == 0


def test_without_agent_audio_kept_the_frames_keep_their_times_and_utterances() -> None:
    def run(keep: bool) -> list[tuple[float, str, int]]:
        clock = ManualClock()
        leg = MemoryLeg("c", clock, keep_agent_audio=keep)
        leg.play("a", _pcm(3 * FRAME_BYTES, 700))
        leg.end_utterance("a")
        for _ in range(5):
            leg.step()
            clock.advance(0.02)
        return [(f.t, f.utterance_id, len(f.pcm)) for f in leg.sent]

    kept, dropped = run(True), run(False)
    assert [f[:2] for f in kept] == [f[:2] for f in dropped] and len(kept) == 3
    assert all(n == FRAME_BYTES for *_, n in kept) and all(n == 0 for *_, n in dropped)
