"""Level gate under a fake clock: once the caller has been heard, speech far below their own
level (background talk) opens no turn and does not pause the agent; speech near it does."""

from __future__ import annotations

import math

from bridge.conversation import actions as act
from bridge.conversation.engine import State
from bridge.conversation.level_gate import FULL_SCALE_DB, LevelGate
from tests.conversation.harness import Harness, tone

CALLER = tone(8000)  # -15 dBFS
TV = tone(8000 // 10)  # 20 dB below the caller
GATE = {"level_gate_db": 15, "level_gate_learn_ms": 1000, "level_gate_floor_dbfs": -60}


def _heard_caller(h: Harness) -> None:
    h.greet()
    h.frames(60, True, CALLER)  # 1.2 s of the caller: their level is learnt
    h.frames(15, False)
    h.transcript("where are you located")
    rid = h.reply_id
    h.llm("On Market Street.")
    h.tts(rid, 1000)
    h.play(rid, 1000)
    assert h.engine.state is State.LISTENING


def test_background_talk_far_below_the_caller_opens_no_turn() -> None:
    h = Harness(**GATE)
    _heard_caller(h)
    before = len(h.log)
    h.frames(200, True, TV)  # 4 s of TV the VAD calls speech
    assert h.engine.state is State.LISTENING
    assert not h.of(act.SttAudio, before) and not h.of(act.StartLlm, before)
    h.frames(20, True, tone(8000 // 2))  # the caller, a little quieter (6 dB): heard
    assert h.engine.state is State.USER_SPEAKING


def test_background_talk_does_not_pause_the_agent() -> None:
    h = Harness(**GATE)
    _heard_caller(h)
    h.say_turn("and on saturday")
    rid = h.reply_id
    h.llm("We open at ten on Saturday.")
    h.tts(rid, 2000)
    before = len(h.log)
    h.play(rid, 1000, speech=True, pcm=TV, finish=False)
    assert not h.of(act.PausePlayback, before) and not h.of(act.ClearPlayback, before)


def test_background_talk_does_not_hold_a_turn_open() -> None:
    """The caller stops; the TV 30 dB down goes on, and the VAD calls it speech: the turn
    still ends (inside a turn the gate allows level_gate_hold_db more, not 30 dB)."""
    h = Harness(**GATE, level_gate_hold_db=10)
    _heard_caller(h)
    h.frames(30, True, CALLER)
    before = len(h.log)
    h.frames(50, True, tone(8000 // 32))
    assert h.of(act.SttFinalize, before)


def test_gate_open_until_the_caller_was_heard_and_when_off() -> None:
    h = Harness(**GATE)
    h.greet()
    h.wait(0.5)  # past the echo tail of the greeting
    h.frames(10, True, TV)  # nothing learnt yet: a quiet caller is still a caller
    assert h.engine.state is State.USER_SPEAKING
    off = LevelGate(0, 1000, floor_dbfs=-40)
    assert off.frame(1.0, True, in_turn=False)


def test_floor_applies_before_anything_was_learnt() -> None:
    gate = LevelGate(8, 1000, floor_dbfs=-40)
    below = 10 ** ((-45 + FULL_SCALE_DB) / 20)
    above = 10 ** ((-35 + FULL_SCALE_DB) / 20)
    assert not any(gate.frame(below, True, in_turn=False) for _ in range(20))
    assert [gate.frame(above, True, in_turn=False) for _ in range(20)][-1]


def test_gate_learns_from_confirmed_turns_only_and_rises_fast() -> None:
    gate = LevelGate(8, 100)
    for _ in range(10):
        gate.frame(100.0, True, in_turn=True)
        gate.speech()
    gate.turn_dropped()  # a turn with no words (noise): not the caller
    assert gate.caller_db is None
    for _ in range(10):
        gate.frame(800.0, True, in_turn=True)
        gate.speech()
    gate.turn_confirmed()  # a TV heard before the caller (its words were transcribed)
    tv_db = gate.caller_db
    for _ in range(10):
        gate.frame(8000.0, True, in_turn=True)
        gate.speech()
    gate.turn_confirmed()  # the caller, 20 dB louder: the estimate moves most of the way up
    assert gate.caller_db is not None and tv_db is not None and gate.caller_db > tv_db + 13
    assert not [gate.frame(800.0, True, in_turn=False) for _ in range(10)][-1]
    assert [gate.frame(8000 / 2, True, in_turn=False) for _ in range(10)][-1]


def test_quiet_frames_measured_later_give_the_eager_levels() -> None:
    """``quiet`` (a non-speech frame whose power is worked out only if speech follows) gives
    exactly what ``frame(frame_rms(pcm), False, ...)`` gives: the same verdicts, levels and
    learnt caller level on the same frames, runs of quiet frames shorter and longer than the
    window included."""
    import numpy as np

    from bridge.audio.g711 import UlawPcm
    from bridge.conversation.echo import frame_rms

    rng = np.random.default_rng(7)
    frames: list[tuple[bytes, bool]] = []
    for run in [3, 14, 1, 9, 10, 11, 2, 25, 4, 0, 6]:
        for _ in range(run):  # VAD silence of random loudness
            amp = int(rng.integers(0, 3000))
            pcm = rng.integers(-amp, amp + 1, 160, dtype=np.int16).tobytes()
            # the stream leg's frames are g711.UlawPcm, a bytes subclass: both kinds
            frames.append((UlawPcm(pcm) if len(frames) % 2 else pcm, False))
        for _ in range(int(rng.integers(1, 8))):  # speech
            amp = int(rng.integers(100, 20000))
            frames.append((rng.integers(-amp, amp + 1, 160, dtype=np.int16).tobytes(), True))
    for below_db in (15.0, 0.0):  # on, and off (quiet does nothing then)
        eager = LevelGate(below_db, 200, -60.0)
        lazy = LevelGate(below_db, 200, -60.0)
        for n, (pcm, speech) in enumerate(frames):
            in_turn = n % 3 == 0
            got_eager = eager.frame(frame_rms(pcm), speech, in_turn)
            if speech:
                got_lazy = lazy.frame(frame_rms(pcm), speech, in_turn)
            else:
                lazy.quiet(pcm)
                got_lazy = False
            assert got_lazy == got_eager
            if speech:
                assert lazy.level_db() == eager.level_db()
                eager.speech()
                lazy.speech()
            if n % 17 == 16:
                eager.turn_confirmed()
                lazy.turn_confirmed()
                assert lazy.caller_db == eager.caller_db
        assert lazy.level_db() == eager.level_db()
        assert list(lazy._window) == list(eager._window)


def test_percentile_is_numpys_linear_percentile() -> None:
    """The turn's 90th percentile without numpy: the same float as np.percentile on the
    same values (sizes 1-300, duplicates, exact and fractional virtual indexes)."""
    import numpy as np

    from bridge.conversation.level_gate import percentile

    rng = np.random.default_rng(11)
    for n in [*range(1, 60), 99, 100, 101, 111, 250, 300]:
        for _ in range(8):
            values = (rng.normal(60, 15, n) if n % 2 else rng.integers(0, 5, n) * 7.5).tolist()
            for q in (90, 50, 0, 100, 10, 33):
                assert percentile(values, q) == float(np.percentile(values, q)), (n, q)


def test_frame_takes_any_real_rms_past_the_window() -> None:
    """``frame``'s rms may be an int or a numpy scalar (callers outside the engine): its power
    is a measured power, not a held frame, also once it leaves the 200 ms window."""
    import numpy as np

    for rms in (100, np.float32(100.0), np.int16(100), 100.0):
        gate = LevelGate(15.0, 200, -60.0)
        got = [gate.frame(rms, True, in_turn=False) for _ in range(25)]  # type: ignore[arg-type]
        assert got == [True] * 25, type(rms)
        assert gate.level_db() == 40.0
        gate.quiet(bytes(320))
        assert gate.level_db() == 10 * math.log10(9 * 10000 / 10)


def test_quiet_keeps_the_frame_as_it_was_given() -> None:
    """A frame held by ``quiet`` is measured as it was when given, even if the caller's buffer
    (a bytearray or memoryview of a reused receive buffer) is overwritten before the level is
    needed."""
    import numpy as np

    loud = np.full(160, 8000, dtype=np.int16).tobytes()
    for make in (bytearray, lambda b: memoryview(bytearray(b))):
        gate = LevelGate(15.0, 200, -60.0)
        eager = LevelGate(15.0, 200, -60.0)
        buf = make(bytes(320))
        gate.quiet(buf)
        eager.frame(0.0, False, in_turn=False)
        buf[:] = loud  # the producer reuses its buffer for the next frame
        assert gate.frame(8000.0, True, in_turn=False) == eager.frame(8000.0, True, in_turn=False)
        assert gate.level_db() == eager.level_db()
