"""Review (review11) of the SSRC straggler rule (RtpLeg._straggler): a packet of the SSRC the
caller's stream just left is dropped as a reordered straggler when it comes less than 1 s
after the change and is numbered within 100 of that stream's newest. A sender that switches
back within that second (a PBX or SBC inserting a short prompt or beep from another source,
then resuming the original stream, whose numbering goes on from where it paused, RFC 3550
5.1) sends packets that match the same rule. The leg is driven directly (no wall clock)."""

from __future__ import annotations

import struct

from bridge.media.rtp_leg import RtpLeg
from bridge.settings.media import MediaSettings
from tests.media.support import allocator, media
from tests.media.test_rtp_leg_fast_path import FakeSocket
from tests.media.test_rtp_leg_listen import code_frame, identify

PEER = ("127.0.0.1", 40_002)


async def test_a_switch_back_within_a_second_to_the_ssrc_left_is_heard() -> None:
    leg = await RtpLeg.open("switch-back", "127.0.0.1", allocator(2), MediaSettings())
    leg.listen_on_arrival()
    leg.start(media(PEER[1]))
    sock = FakeSocket()
    leg._sock = sock  # type: ignore[assignment]
    heard: list[int | None] = []
    now = 1000.0

    def feed(ssrc: int, seq: int, ts: int, frame: int) -> None:
        nonlocal now
        now += 0.02
        sock.next = (struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + code_frame(frame),
                     PEER)
        leg.on_readable(now)
        heard.extend(identify(f) for f in leg._playout.frames())

    try:
        a, a_seq, a_ts = 0x11111111, 40_000, 3_000_000
        b, b_seq, b_ts = 0x22222222, 7, 900
        for i in range(10):  # the caller's stream A
            feed(a, a_seq + i, a_ts + 160 * i, i)
        for i in range(10):  # 200 ms from another source B (a prompt, a beep)
            feed(b, b_seq + i, b_ts + 160 * i, 10 + i)
        for i in range(10):  # A again: its numbering goes on, its clock ran through the pause
            feed(a, a_seq + 10 + i, a_ts + 160 * (20 + i), 20 + i)
        assert [n for n in heard if n is not None][-10:] == list(range(20, 30))
        assert leg.stats()["ssrc_changes"] == 2
    finally:
        leg._sock = leg._pair.rtp
        await leg.close()


async def test_dtmf_on_its_own_ssrc_beside_the_audio_keeps_its_digit_and_the_audio() -> None:
    """A gateway that sends RFC 4733 events under an SSRC of their own while the audio goes
    on under its SSRC: every alternation is an SSRC change. The digit keeps its duration (its
    later packets, stragglers of the SSRC left, still reach the DTMF receiver) and the
    caller's audio is heard again within 100 ms, not dropped for a second."""
    leg = await RtpLeg.open("dtmf-ssrc", "127.0.0.1", allocator(2), MediaSettings())
    leg.listen_on_arrival()
    leg.start(media(PEER[1]))
    sock = FakeSocket()
    leg._sock = sock  # type: ignore[assignment]
    digits: list[tuple[str, int]] = []
    leg._dtmf_in = lambda digit, ms, now, method: digits.append((digit, ms))  # type: ignore[method-assign]
    heard: list[int | None] = []
    now = 1000.0

    def send(pkt: bytes) -> None:
        sock.next = (pkt, PEER)
        leg.on_readable(now)

    try:
        a, a_seq, a_ts, d, d_seq = 0x11111111, 100, 5_000, 0x22222222, 900
        for i in range(60):
            now += 0.02
            send(struct.pack("!BBHII", 0x80, 0, a_seq + i, a_ts + 160 * i, a) + code_frame(i))
            if 10 <= i < 30:  # a 400 ms '5' (event code 5), its end packet sent 3 times
                end = i == 29
                for _ in range(3 if end else 1):
                    second = 101 | (0x80 if i == 10 else 0)
                    event = bytes([5, 0x80 if end else 0]) + struct.pack("!H", (i - 9) * 160)
                    send(struct.pack("!BBHII", 0x80, second, d_seq, 7_000, d) + event)
                    d_seq += 1
            heard.extend(identify(f) for f in leg._playout.frames())
        assert digits == [("5", 400)]
        assert [n for n in heard if n is not None and n >= 16] == list(range(16, 60))
    finally:
        leg._sock = leg._pair.rtp
        await leg.close()


async def test_an_old_digits_end_reordered_behind_a_fail_over_is_not_reported_again() -> None:
    """The other side of the test above: after an SSRC change (an SBC fail-over) the old
    stream's last end packet of digit '1', reordered behind the new stream's first packet of
    digit '2', neither reports '1' again nor cuts '2' short."""
    leg = await RtpLeg.open("dtmf-failover", "127.0.0.1", allocator(2), MediaSettings())
    leg.start(media(PEER[1]))
    sock = FakeSocket()
    leg._sock = sock  # type: ignore[assignment]
    digits: list[tuple[str, int]] = []
    leg._dtmf_in = lambda digit, ms, now, method: digits.append((digit, ms))  # type: ignore[method-assign]
    now = 1000.0

    def event(ssrc: int, seq: int, ts: int, code: int, end: bool, samples: int) -> None:
        nonlocal now
        now += 0.02
        second = 101 | (0x80 if samples == 160 and not end else 0)
        sock.next = (struct.pack("!BBHII", 0x80, second, seq, ts, ssrc)
                     + bytes([code, 0x80 if end else 0]) + struct.pack("!H", samples), PEER)
        leg.on_readable(now)

    try:
        a, b = 0x11111111, 0x22222222
        for i in range(5):
            event(a, 10 + i, 7_000, 1, False, 160 * (i + 1))
        event(a, 15, 7_000, 1, True, 800)
        event(a, 16, 7_000, 1, True, 800)
        event(b, 500, 90_000, 2, False, 160)  # B takes over, a new digit at once
        event(a, 17, 7_000, 1, True, 800)  # A's third end packet, reordered behind it
        for i in range(1, 6):
            event(b, 500 + i, 90_000, 2, i == 5, 160 * (i + 1))
        assert digits == [("1", 100), ("2", 120)]
    finally:
        leg._sock = leg._pair.rtp
        await leg.close()
