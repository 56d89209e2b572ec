"""The send queue: exact 20 ms framing, playback events, heard_ms, clear()."""

from __future__ import annotations

import numpy as np

from bridge.leg import LegEvent, PlaybackDone, PlaybackProgress, PlaybackStarted
from bridge.media.playback import PlaybackQueue


def pcm(samples: int, value: int = 1000) -> bytes:
    return np.full(samples, value, dtype="<i2").tobytes()


def make() -> tuple[PlaybackQueue, list[LegEvent]]:
    events: list[LegEvent] = []
    return PlaybackQueue(events.append), events


def test_audio_is_cut_into_exact_160_sample_frames_and_the_tail_padded() -> None:
    q, events = make()
    q.play("a", pcm(100))  # less than a frame: waits for more
    assert not q
    q.play("a", pcm(300, 2000))  # 400 samples: two frames + 80 left over
    q.end("a")  # pads the 80 with silence
    frames = [q.next_frame(float(i), audible=True) for i in range(4)]
    assert [len(f) for f in frames[:3] if f is not None] == [320, 320, 320]
    assert frames[3] is None
    last = np.frombuffer(frames[2] or b"", dtype="<i2")
    assert (last[:80] == 2000).all() and (last[80:] == 0).all()
    assert q.heard_ms("a") == 400 // 8  # padding is not counted as heard
    kinds = [type(e) for e in events]
    assert kinds == [PlaybackStarted, PlaybackDone]
    done = events[-1]
    assert isinstance(done, PlaybackDone) and done.heard_ms == 50 and done.t == 2.0


def test_progress_every_100_ms_and_done_after_the_last_frame() -> None:
    q, events = make()
    q.play("u", pcm(160 * 12))
    q.end("u")
    for i in range(12):
        q.next_frame(i * 0.02, audible=True)
    progress = [e for e in events if isinstance(e, PlaybackProgress)]
    assert [p.heard_ms for p in progress] == [100, 200]
    assert isinstance(events[-1], PlaybackDone) and events[-1].heard_ms == 240


def test_utterances_play_in_order_and_an_empty_one_finishes_in_turn() -> None:
    q, events = make()
    q.play("one", pcm(320, 1))
    q.end("one")
    q.end("empty")
    q.play("two", pcm(160, 2))
    q.end("two")
    values = []
    for i in range(4):
        f = q.next_frame(float(i), audible=True)
        if f is not None:
            values.append(int(np.frombuffer(f, dtype="<i2")[0]))
    assert values == [1, 1, 2]
    order = [(type(e).__name__, getattr(e, "utterance_id", "")) for e in events]
    assert order == [
        ("PlaybackStarted", "one"), ("PlaybackDone", "one"), ("PlaybackDone", "empty"),
        ("PlaybackStarted", "two"), ("PlaybackDone", "two"),
    ]


def test_clear_drops_the_queue_keeps_heard_ms_and_ignores_late_audio() -> None:
    q, events = make()
    q.play("reply", pcm(160 * 50))
    for i in range(7):
        q.next_frame(float(i), audible=True)
    q.clear()
    assert q.next_frame(8.0, audible=True) is None
    assert q.heard_ms("reply") == 140
    q.play("reply", pcm(1600))  # a TTS chunk that raced the barge-in
    q.end("reply")
    assert q.next_frame(9.0, audible=True) is None
    assert q.heard_ms("reply") == 140
    assert not any(isinstance(e, PlaybackDone) for e in events)
    q.play("next", pcm(160))  # a new utterance plays normally
    assert q.next_frame(10.0, audible=True) is not None


def test_frames_consumed_while_inaudible_are_not_heard() -> None:
    q, events = make()
    q.play("u", pcm(160 * 4))
    q.end("u")
    q.next_frame(0.0, audible=True)
    q.next_frame(0.02, audible=False)
    q.next_frame(0.04, audible=False)
    q.next_frame(0.06, audible=True)
    assert q.heard_ms("u") == 40
    assert isinstance(events[-1], PlaybackDone) and events[-1].heard_ms == 40
    assert q.heard_ms("unknown") == 0


def test_odd_byte_counts_are_carried_not_lost() -> None:
    q, _ = make()
    data = pcm(160)
    q.play("u", data[:101])
    q.play("u", data[101:])
    assert q.next_frame(0.0, audible=True) == data


def test_report_progress_gives_the_exact_position_between_periodic_reports() -> None:
    # a pause 7 frames in: the periodic report said 100 ms, the caller heard 140
    q, events = make()
    q.play("u", pcm(160 * 12))
    q.end("u")
    for i in range(7):
        q.next_frame(i * 0.02, audible=True)
    q.report_progress(0.5)
    last = events[-1]
    assert isinstance(last, PlaybackProgress) and (last.heard_ms, last.t) == (140, 0.5)
    q.clear()
    n = len(events)
    q.report_progress(0.6)  # a cleared utterance reports nothing more
    assert len(events) == n
