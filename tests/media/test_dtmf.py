"""RFC 4733 DTMF logic: receiving (de-duplication, lost end packets) and the send schedule."""

from __future__ import annotations

import pytest
from aiortp import DtmfEvent

from bridge.media.dtmf import DtmfReceiver, DtmfSender, normalize_digits


def ev(code: int, end: bool, duration: int) -> bytes:
    return DtmfEvent(code, end, 10, duration).serialize()


def feed_digit(rx: DtmfReceiver, code: int, ts: int, now: float, ssrc: int = 1) -> list[tuple[str, int]]:
    out = []
    for d in (160, 320, 480, 640):
        out += rx.on_packet(ssrc, ts, ev(code, False, d), now)
    for _ in range(3):  # three end packets
        out += rx.on_packet(ssrc, ts, ev(code, True, 800), now)
    return out


def test_three_end_packets_make_one_digit() -> None:
    rx = DtmfReceiver()
    assert feed_digit(rx, 5, 1000, 0.0) == [("5", 100)]


def test_several_digits_in_a_row() -> None:
    rx = DtmfReceiver()
    got = []
    for i, code in enumerate((1, 2, 3, 11, 10, 0)):
        got += feed_digit(rx, code, 1000 + i * 1600, 0.0)
    assert "".join(d for d, _ in got) == "123#*0"


def test_same_timestamp_reused_for_the_next_digit_still_counts() -> None:
    rx = DtmfReceiver()
    got = feed_digit(rx, 1, 0, 0.0) + feed_digit(rx, 1, 0, 0.0) + feed_digit(rx, 2, 0, 0.0)
    assert [d for d, _ in got] == ["1", "1", "2"]


def test_lost_end_packets_report_on_next_event_or_after_a_while() -> None:
    rx = DtmfReceiver(expire_s=0.5)
    assert rx.on_packet(1, 100, ev(7, False, 320), 0.0) == []
    assert rx.on_packet(1, 900, ev(8, False, 160), 0.1) == [("7", 40)]
    assert rx.expire(0.3) == []
    assert rx.expire(0.7) == [("8", 20)]
    assert rx.expire(2.0) == []


def test_garbage_and_non_digit_events_are_ignored() -> None:
    rx = DtmfReceiver()
    assert rx.on_packet(1, 1, b"\x01", 0.0) == []
    assert rx.on_packet(1, 2, ev(16, True, 800), 0.0) == []  # flash hook


def test_sender_schedule_distinct_timestamps_three_ends_marker_first() -> None:
    tx = DtmfSender()
    token = object()
    tx.add("1#", duration_ms=100, gap_ms=40, token=token)
    ts = 5000
    packets = []
    finished = []
    for _ in range(40):
        step = tx.tick(ts, inband=False)
        packets += step.packets
        finished += step.finished
        ts += 160
        if not tx.busy:
            break
    assert finished == [token]
    events = [(DtmfEvent.parse(p), marker, t) for p, marker, t in packets]
    stamps = sorted({t for _, _, t in events})
    assert len(stamps) == 2 and stamps[1] - stamps[0] >= 800  # one timestamp per digit
    for stamp, code in zip(stamps, (1, 11), strict=True):
        mine = [(e, m) for e, m, t in events if t == stamp]
        assert all(e.event == code for e, _ in mine)
        assert [m for _, m in mine] == [True] + [False] * (len(mine) - 1)
        ends = [e for e, _ in mine if e.end]
        assert len(ends) == 3 and all(e.duration == 800 for e in ends)
        durations = [e.duration for e, _ in mine if not e.end]
        assert durations == sorted(durations) and durations[0] == 160


def test_inband_fallback_produces_tone_frames() -> None:
    tx = DtmfSender()
    tx.add("5", duration_ms=60, gap_ms=20, token=None)
    tones = [tx.tick(0, inband=True).tone for _ in range(3)]
    assert all(t is not None and len(t) == 320 for t in tones)
    assert tx.tick(0, inband=True).tone is None  # the pause after the digit


def test_bad_digits_are_refused_with_the_culprit_named() -> None:
    assert normalize_digits("12ab*#") == "12AB*#"
    with pytest.raises(ValueError, match="'x'"):
        normalize_digits("1x")
