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
