"""The stream leg's send planner: pause() takes back what Plivo holds unplayed (by the pacing
clock), resume() sends it again with new checkpoints; every byte is heard once."""

from __future__ import annotations

from bridge.leg import LegEvent, PlaybackDone, PlaybackProgress
from bridge.stream.send_pacer import Chunk, Playout

MS = 16  # bytes per ms of s16le 8 kHz


def ramp(ms: int) -> bytes:
    """Audio whose every sample pair is distinct (its position), so order can be checked."""
    return b"".join((i % 65536).to_bytes(2, "little") for i in range(ms * 8))


def drain(p: Playout, now: float) -> list[Chunk]:
    out = []
    while isinstance(step := p.next_chunk(now), Chunk):
        out.append(step)
    return out


def test_pause_takes_back_the_unplayed_audio_and_resume_sends_it_once() -> None:
    events: list[LegEvent] = []
    p = Playout(events.append, chunk_ms=100, lead_ms=200)
    audio = ramp(600)
    p.play("u", audio)
    p.end("u", 0.0)
    first = drain(p, 0.0)  # 300 ms sent at t=0 (the lead), Plivo plays it 0.0-0.3
    assert sum(len(c.pcm) for c in first) == 300 * MS
    p.played(first[0].checkpoint, 0.1)
    assert p.pause(0.15)  # Plivo holds audio of ours: clearAudio must go
    assert p.heard_ms("u") == 130  # played by the clock at the pause, less a frame of margin
    assert p.next_chunk(0.2) is None  # nothing goes while paused
    p.played(first[1].checkpoint, 0.2)  # a late playedStream of the cleared audio: ignored
    assert p.heard_ms("u") == 130
    p.resume(1.0)
    again = []
    now = 1.0
    while not p.idle:
        again += drain(p, now)
        now += 0.02
    assert b"".join(c.pcm for c in again) == audio[130 * MS:]  # resumes at the pause (one frame early)
    assert len({c.checkpoint for c in first + again}) == len(first) + len(again)  # new checkpoints
    p.played(again[-1].checkpoint, now + 0.5)
    assert isinstance(events[-1], PlaybackDone) and events[-1].heard_ms == 600


def test_pause_with_nothing_at_plivo_needs_no_clear() -> None:
    p = Playout(lambda e: None)
    assert not p.pause(0.0)
    p.play("u", ramp(100))
    assert p.next_chunk(0.0) is None  # paused: queued, not sent
    p.resume(0.0)
    assert isinstance(p.next_chunk(0.0), Chunk)


def test_clear_while_paused_drops_everything() -> None:
    p = Playout(lambda e: None)
    p.play("u", ramp(500))
    drain(p, 0.0)
    p.pause(0.1)
    assert p.clear(0.1) is False  # the pause already cleared Plivo's buffer
    p.play("v", ramp(100))
    chunks = drain(p, 0.2)
    assert [c.utterance_id for c in chunks] == ["v"]


def test_a_pause_reports_the_heard_position_at_once() -> None:
    # the engine takes the heard position only from PlaybackProgress: without a report at the
    # pause, a confirmed barge-in would cut the history at the last playedStream (up to a
    # chunk and a round trip short of what the caller heard)
    events: list[LegEvent] = []
    p = Playout(events.append, chunk_ms=100, lead_ms=200)
    p.play("u", ramp(600))
    p.end("u", 0.0)
    first = drain(p, 0.0)
    p.played(first[0].checkpoint, 0.1)
    assert p.pause(0.15)
    progress = [e for e in events if isinstance(e, PlaybackProgress)]
    # 130 ms by the clock (less the frame re-sent), a frame less again for network jitter
    assert (progress[-1].heard_ms, progress[-1].t) == (110, 0.15)
    assert p.heard_ms("u") == 130
