"""ListenBuffer: caller frames for a machine listener, in order, as soon as they are there;
a missing packet waited for up to max_wait_ms, then concealed; a paused sender suspends
delivery. Each call of ``frames()`` is one 20 ms tick."""

from __future__ import annotations

import struct

from bridge.media.listen_buffer import ListenBuffer

BASE = 4_294_960_000  # near the wrap: timestamps wrap inside the tests


def frame(i: int) -> bytes:
    """Frame ``i``: 160 samples of the value 100 + i (tells frames apart after delivery)."""
    return struct.pack("<h", 100 + i) * 160


def ts(i: int) -> int:
    return (BASE + 160 * i) & 0xFFFFFFFF


def ids(frames: list[bytes]) -> list[int]:
    out = []
    for f in frames:
        value = struct.unpack_from("<h", f)[0]
        assert f == struct.pack("<h", value) * 160
        out.append(value - 100)
    return out


def test_each_frame_comes_out_on_the_tick_it_arrived() -> None:
    buf = ListenBuffer(max_wait_ms=60)
    assert buf.frames() == [] and not buf.primed
    for i in range(20):
        buf.put(ts(i), frame(i))
        assert ids(buf.frames()) == [i]  # no playout depth: not one tick of delay
    assert buf.concealed_frames == 0 and buf.late == 0


def test_a_burst_after_a_stall_comes_out_at_once() -> None:
    buf = ListenBuffer(max_wait_ms=60)
    buf.put(ts(0), frame(0))
    assert ids(buf.frames()) == [0]
    assert buf.frames() == []  # frame 1 is late: waited for, nothing made up yet
    for i in (1, 2, 3):
        buf.put(ts(i), frame(i))
    assert ids(buf.frames()) == [1, 2, 3]
    assert buf.concealed_frames == 0


def test_reordered_packets_come_out_in_order() -> None:
    buf = ListenBuffer(max_wait_ms=60)
    buf.put(ts(0), frame(0))
    assert ids(buf.frames()) == [0]
    buf.put(ts(2), frame(2))
    assert buf.frames() == []  # 1 is missing, 2 waits behind it
    buf.put(ts(1), frame(1))
    assert ids(buf.frames()) == [1, 2]
    assert buf.concealed_frames == 0


def test_a_lost_packet_is_concealed_once_later_audio_is_max_wait_past_it() -> None:
    buf = ListenBuffer(max_wait_ms=40)
    buf.put(ts(0), frame(0))
    assert ids(buf.frames()) == [0]
    buf.put(ts(2), frame(2))
    assert buf.frames() == []
    buf.put(ts(3), frame(3))  # audio up to 40 ms past frame 1's end: 1 is lost
    out = buf.frames()
    assert len(out) == 3 and ids(out[1:]) == [2, 3]
    assert buf.concealed_frames == 1
    buf.put(ts(1), frame(1))  # too late: its place was filled
    assert buf.late == 1 and buf.frames() == []


def test_a_paused_sender_is_concealed_then_delivery_suspends_and_restarts_at_once() -> None:
    buf = ListenBuffer(max_wait_ms=60, max_conceal_ms=60)
    buf.put(ts(0), frame(0))
    assert ids(buf.frames()) == [0]
    # nothing more: two ticks of waiting, then one concealed frame a tick for 60 ms
    assert [len(buf.frames()) for _ in range(5)] == [0, 0, 1, 1, 1]
    assert not buf.primed  # suspended: the leg sends filler silence meanwhile
    assert buf.frames() == []
    buf.put(ts(50), frame(50))  # the sender talks again, timestamps ran on
    assert ids(buf.frames()) == [50]
    assert buf.concealed_frames == 3


def test_a_new_timeline_is_followed() -> None:
    buf = ListenBuffer(max_wait_ms=60)
    buf.put(ts(0), frame(0))
    assert ids(buf.frames()) == [0]
    buf.put(ts(1000), frame(7))  # 20 s ahead: a new timeline (a restarted sender)
    assert ids(buf.frames()) == [7]
    assert buf.resyncs == 1
    for i in range(5):  # 1 s back, again and again: the sender's clock moved back
        buf.put(ts(900 + i), frame(i))
    assert buf.resyncs == 2
    assert ids(buf.frames())[0] == 4


def test_duplicates_are_dropped() -> None:
    buf = ListenBuffer(max_wait_ms=60)
    buf.put(ts(0), frame(0))
    buf.put(ts(1), frame(1))
    buf.put(ts(1), frame(1))
    assert ids(buf.frames()) == [0, 1]
    assert buf.duplicates == 1


def test_a_stale_block_is_dropped_not_followed() -> None:
    """A block of old packets (their own sequence numbers, behind the newest) arriving after
    they were delivered or concealed: dropped as late, never a resync that re-delivers them."""
    buf = ListenBuffer(max_wait_ms=60)
    for i in range(20):
        buf.put(ts(i), frame(i), seq=(65530 + i) & 0xFFFF)  # sequence numbers wrap too
    assert ids(buf.frames()) == list(range(20))
    for i in range(10, 20):  # 200 ms of stale audio, all at once
        buf.put(ts(i), frame(i), seq=(65530 + i) & 0xFFFF)
    assert buf.frames() == []
    assert buf.resyncs == 0 and buf.late == 10
    buf.put(ts(20), frame(20), seq=(65530 + 20) & 0xFFFF)
    assert ids(buf.frames()) == [20]


def test_a_timeline_moved_back_with_new_sequence_numbers_is_followed_and_the_old_one_dropped() -> None:
    buf = ListenBuffer(max_wait_ms=60)
    for i in range(10):
        buf.put(ts(i), frame(i), seq=100 + i)
    assert ids(buf.frames()) == list(range(10))
    for i in range(5):  # the sender's timestamps went 1 s back, its numbering went on
        buf.put(ts(-50 + i), frame(50 + i), seq=110 + i)
    assert buf.resyncs == 1
    assert ids(buf.frames()) == [54]
    buf.put(ts(10), frame(10), seq=109)  # of the timeline left behind (ahead of the new one)
    buf.put(ts(-45), frame(55), seq=115)
    assert ids(buf.frames()) == [55]
    assert buf.resyncs == 1


def test_a_reordered_packet_is_still_taken_by_sequence() -> None:
    buf = ListenBuffer(max_wait_ms=60)
    buf.put(ts(0), frame(0), seq=7)
    buf.put(ts(2), frame(2), seq=9)
    buf.put(ts(1), frame(1), seq=8)  # older than the newest, not late: it fills its slot
    assert ids(buf.frames()) == [0, 1, 2]
    assert buf.late == 0


def test_a_reordered_first_packet_of_a_timeline_that_jumped_ahead_is_kept() -> None:
    """The sender's timestamps jump 1.8 s ahead (a new source behind an SBC/PBX, numbering
    going on), and the jump's first two packets come swapped. The second one (seq 111) resyncs
    the buffer; the first one (seq 110) is numbered before the resync but its timestamp is the
    new timeline's first slot: it is kept, not dropped as the old timeline's."""
    buf = ListenBuffer(max_wait_ms=60)
    for i in range(10):
        buf.put(ts(i), frame(i), seq=100 + i)
    assert ids(buf.frames()) == list(range(10))
    buf.put(ts(101), frame(101), seq=111)  # more than 1 s ahead: a new timeline
    buf.put(ts(100), frame(100), seq=110)  # its first packet, reordered behind it
    assert buf.resyncs == 1
    assert ids(buf.frames()) == [100, 101]
    assert buf.late == 0
