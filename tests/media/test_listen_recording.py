"""ListenRecording: in listen mode the recording gets every caller frame the listener got, in
order, beside the agent audio of its tick; frames beyond one a tick are neither dropped nor
held without bound. Written through the real CallRecorder and read back from the WAV."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

from bridge.media.listen_recording import ListenRecording
from bridge.media.recording import CallRecorder

SILENCE = bytes(320)


def frame(i: int) -> bytes:
    return struct.pack("<h", i) * 160


def rows(path: Path) -> list[tuple[int, int]]:
    """Each 20 ms row of the WAV as (caller value, agent value); 0 is silence."""
    with wave.open(str(path), "rb") as wav:
        data = wav.readframes(wav.getnframes())
    samples = struct.unpack(f"<{len(data) // 2}h", data)
    out = []
    for r in range(len(samples) // 320):
        left, right = samples[r * 320 : (r + 1) * 320 : 2], samples[r * 320 + 1 : (r + 1) * 320 : 2]
        assert len(set(left)) == 1 and len(set(right)) == 1, "a row mixes two frames"
        out.append((left[0], right[0]))
    return out


def test_a_burst_after_a_wait_lands_on_the_ticks_it_was_sent_for(tmp_path: Path) -> None:
    rec = CallRecorder(tmp_path / "r.wav")
    listen = ListenRecording(rec, max_skew=5)
    listen.tick([frame(1)], frame(-1), waiting=True)
    listen.tick([], frame(-2), waiting=True)  # frame 2 missing: waited for
    listen.tick([], frame(-3), waiting=True)
    listen.tick([frame(2), frame(3), frame(4)], frame(-4), waiting=True)
    listen.tick([frame(5)], frame(-5), waiting=True)
    listen.flush()
    rec.close()
    assert rows(tmp_path / "r.wav") == [(i, -i) for i in range(1, 6)]


def test_a_burst_bigger_than_the_skew_loses_nothing(tmp_path: Path) -> None:
    rec = CallRecorder(tmp_path / "r.wav")
    listen = ListenRecording(rec, max_skew=5)
    listen.tick([frame(i) for i in range(1, 21)], frame(-1), waiting=True)  # a stalled loop's burst
    for t in range(2, 6):
        listen.tick([frame(20 + t - 1)], frame(-t), waiting=True)
        assert len(listen._caller) <= 5 and len(listen._agent) <= 5  # bounded
    listen.flush()
    rec.close()
    got = rows(tmp_path / "r.wav")
    assert [c for c, _ in got if c] == list(range(1, 25))  # every caller frame, in order
    assert [a for _, a in got if a] == [-1, -2, -3, -4, -5]  # and every agent frame


def test_a_paused_sender_does_not_hold_the_agent_back(tmp_path: Path) -> None:
    rec = CallRecorder(tmp_path / "r.wav")
    listen = ListenRecording(rec, max_skew=5)
    for t in range(1, 4):
        listen.tick([], frame(-t), waiting=False)
    assert rec.frames == 3  # written at once: no caller frame is owed
    for t in range(4, 14):
        listen.tick([], frame(-t), waiting=True)  # waited for too long: at most 5 held
    assert rec.frames == 8
    listen.flush()
    rec.close()
    assert rows(tmp_path / "r.wav") == [(0, -t) for t in range(1, 14)]
