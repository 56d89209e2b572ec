"""PlaybackQueue's usual-frame paths (play of one whole frame to the utterance played last,
next_frame of a whole-frame item of a started utterance) against its general code: the same
frames (the same objects: codec.Passthrough finds a frame by identity), events and state."""

from __future__ import annotations

import random
from typing import Any

from bridge.leg import LegEvent, PlaybackProgress
from bridge.media.playback import _MAX_UTTERANCES, PlaybackQueue, _progress


def state(queue: PlaybackQueue) -> Any:
    utts = [(u.id, u.carry, u.frames_out, u.sent_samples, u.started, u.ended, u.cancelled, u.done)
            for u in queue._utts.values()]
    items = [(u.id, c, n) for u, c, n in queue._items]
    return utts, items, queue._offset, queue._queued_frames


def as_played(played: dict[int, bytes], pcm: bytes | None) -> bool:
    return pcm is not None and played.get(id(pcm)) is pcm


def test_the_usual_frame_paths_leave_the_queue_as_the_general_one() -> None:
    frame = 320
    checked = usual = 0
    for seed in range(30):
        rng = random.Random(seed)
        events: tuple[list[LegEvent], list[LegEvent]] = ([], [])
        fast, general = PlaybackQueue(events[0].append), PlaybackQueue(events[1].append)
        general._usual = False
        played: dict[int, bytes] = {}  # every pcm played, kept alive: identity is checked
        ids = ["echo"] + [f"u{i}" for i in range(rng.choice([3, _MAX_UTTERANCES + 5]))]
        for step in range(1500):
            r = rng.random()
            t = step * 0.02
            if r < 0.55:
                uid = "echo" if rng.random() < 0.8 else rng.choice(ids)
                size = frame if rng.random() < 0.85 else rng.choice([0, 2, 160, 318, 322, 640, 961])
                pcm = rng.randbytes(size)
                played[id(pcm)] = pcm
                fast.play(uid, pcm)
                general.play(uid, pcm)
            elif r < 0.57:
                uid = rng.choice(ids)
                fast.end(uid)
                general.end(uid)
            elif r < 0.575:
                fast.clear()
                general.clear()
            elif r < 0.585:  # pause (or a clear's first half): the exact heard position now
                fast.report_progress(t)
                general.report_progress(t)
                uid = rng.choice(ids)
                assert fast.heard_ms(uid) == general.heard_ms(uid), f"seed {seed} step {step}"
            else:
                audible = rng.random() < 0.9
                a, b = fast.next_frame(t, audible), general.next_frame(t, audible)
                assert a == b, f"seed {seed} step {step}"
                # a frame played whole goes out as that object in both (Passthrough needs it)
                assert as_played(played, a) == as_played(played, b), f"seed {seed} step {step}"
            assert state(fast) == state(general), f"seed {seed} step {step}"
            assert events[0] == events[1], f"seed {seed} step {step}"
            checked += 1
        usual += sum(isinstance(e, PlaybackProgress) for e in events[0])
    assert checked == 30 * 1500
    assert usual > 200  # progress reports came from the usual path too


def test_a_progress_event_made_through_its_slots_is_the_dataclass() -> None:
    made = _progress("echo", 120, 3.5)
    assert made == PlaybackProgress("echo", 120, 3.5)
    assert hash(made) == hash(PlaybackProgress("echo", 120, 3.5))
    assert type(made) is PlaybackProgress
