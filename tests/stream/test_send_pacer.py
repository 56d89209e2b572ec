"""The stream leg's send planner on a fake clock: pacing, checkpoints, heard, clear."""

from __future__ import annotations

from bridge.leg import LegEvent, PlaybackDone, PlaybackProgress, PlaybackStarted
from bridge.stream.send_pacer import Chunk, Playout

MS = 16  # bytes per ms of s16le 8 kHz


def make(chunk_ms: int = 100, lead_ms: int = 200) -> tuple[Playout, list[LegEvent]]:
    events: list[LegEvent] = []
    return Playout(events.append, chunk_ms=chunk_ms, lead_ms=lead_ms), events


def drain(p: Playout, now: float) -> list[Chunk]:
    out = []
    while isinstance(step := p.next_chunk(now), Chunk):
        out.append(step)
    return out


def test_first_audio_goes_at_once_then_paced_to_the_lead() -> None:
    p, events = make()
    p.play("u", bytes(1000 * MS))
    sent = drain(p, 0.0)
    # 100 ms chunks until 200 ms is buffered ahead of real time, plus the one that crosses it
    assert [len(c.pcm) for c in sent] == [100 * MS] * 3
    assert isinstance(events[0], PlaybackStarted)
    wait = p.next_chunk(0.0)
    assert isinstance(wait, float) and abs(wait - 0.1) < 1e-9
    assert len(drain(p, 0.1)) == 1
    # then as fast as real time, never more than lead + one chunk ahead of it: no burst
    sent_ms = 400.0
    for step in range(1, 60):
        now = 0.1 + step * 0.02
        sent_ms += sum(len(c.pcm) for c in drain(p, now)) / MS
        assert sent_ms - now * 1000 <= 300 + 1e-6
    assert p.idle and sent_ms == 1000


def test_heard_follows_played_checkpoints_and_done_after_last() -> None:
    p, events = make()
    p.play("u", bytes(250 * MS))
    p.end("u", 0.0)
    chunks = drain(p, 0.0)
    assert [len(c.pcm) // MS for c in chunks] == [100, 100, 50]
    assert p.heard_ms("u") == 0
    p.played(chunks[0].checkpoint, 0.1)
    assert p.heard_ms("u") == 100
    assert isinstance(events[-1], PlaybackProgress) and events[-1].heard_ms == 100
    p.played(chunks[2].checkpoint, 0.25)  # a later checkpoint confirms the earlier ones too
    assert p.heard_ms("u") == 250
    assert isinstance(events[-1], PlaybackDone) and events[-1].heard_ms == 250


def test_partial_chunk_waits_while_plivo_has_audio_then_goes_before_underrun() -> None:
    p, _ = make()
    p.play("u", bytes(100 * MS))
    assert len(drain(p, 0.0)) == 1
    p.play("u", bytes(30 * MS))  # less than a chunk, 100 ms still buffered at Plivo
    wait = p.next_chunk(0.0)
    assert isinstance(wait, float) and abs(wait - 0.06) < 1e-9
    (chunk,) = drain(p, 0.07)  # near underrun: send what there is
    assert len(chunk.pcm) == 30 * MS


def test_clear_drops_unsent_and_keeps_confirmed_heard() -> None:
    p, events = make()
    p.play("u", bytes(2000 * MS))
    p.end("u", 0.0)
    chunks = drain(p, 0.0)
    p.played(chunks[0].checkpoint, 0.1)
    assert p.clear(0.12) is True  # Plivo still holds our audio: clearAudio needed
    assert p.idle and p.next_chunk(0.12) is None
    p.play("u", bytes(100 * MS))  # late audio of the cancelled reply is ignored
    assert p.idle
    p.played(chunks[1].checkpoint, 0.15)  # played before the clear took effect: still heard
    assert p.heard_ms("u") == 200
    p.cleared()
    p.played(chunks[2].checkpoint, 0.2)
    assert p.heard_ms("u") == 200
    assert not any(isinstance(e, PlaybackDone) for e in events)
    # a new reply after the barge-in starts at once
    p.play("v", bytes(100 * MS))
    assert len(drain(p, 0.2)) == 1


def test_clear_with_nothing_at_plivo_needs_no_message() -> None:
    p, _ = make()
    assert p.clear(0.0) is False


def test_utterances_never_share_a_chunk_and_empty_one_is_done_at_once() -> None:
    p, events = make()
    p.play("a", bytes(30 * MS))
    p.end("a", 0.0)
    p.play("b", bytes(30 * MS))
    p.end("b", 0.0)
    chunks = drain(p, 0.0)
    assert [(c.utterance_id, len(c.pcm) // MS) for c in chunks] == [("a", 30), ("b", 30)]
    p.end("empty", 0.0)
    assert events[-1] == PlaybackDone("empty", 0, 0.0)


def test_end_after_last_chunk_played() -> None:
    p, events = make()
    p.play("u", bytes(40 * MS))
    (chunk,) = drain(p, 0.0)
    p.played(chunk.checkpoint, 0.04)
    assert not any(isinstance(e, PlaybackDone) for e in events)
    p.end("u", 0.05)
    assert events[-1] == PlaybackDone("u", 40, 0.05)
