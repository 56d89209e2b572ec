"""The RTP leg's packet intake on 127.0.0.1 against a raw RTP peer: a block replayed with its
old sequence numbers is not played to the caller twice (echo mode, the playout buffer), and a
packet of the SSRC the stream just left, reordered behind the change, neither resets the
receive timeline again nor reaches the listener; a real switch back is followed."""

from __future__ import annotations

import random

from bridge.settings.media import MediaSettings
from tests.media.support import RawPeer, started_leg, wait_until
from tests.media.test_rtp_leg_listen import code_frame, identify


def sender(peer: RawPeer) -> tuple[int, int, int]:
    """The peer's current numbering origin: (ssrc, seq0, ts0)."""
    return peer.ssrc, peer.seq, peer.ts


def send(peer: RawPeer, port: int, origin: tuple[int, int, int], i: int, slot: int, frame: int) -> None:
    """Packet ``i`` of the stream ``origin`` at timestamp slot ``slot``, carrying frame ``frame``."""
    ssrc, seq0, ts0 = origin
    peer.ssrc = ssrc
    peer.send(port, 0, code_frame(frame), ts=(ts0 + 160 * slot) & 0xFFFFFFFF, seq=(seq0 + i) & 0xFFFF)


async def test_a_replayed_block_is_not_played_to_the_caller_again() -> None:
    peer, leg, c = await started_leg("replay", MediaSettings(jitter_buffer_ms=40), listen=False)
    origin = sender(peer)

    def got() -> list[int]:
        return [n for n in (identify(f.pcm) for f in c.frames) if n is not None]

    for i in range(20):  # bursts: a loaded box cannot make a packet late, only the replayed ones are
        send(peer, leg.local_port, origin, i, i, i)
    assert await wait_until(lambda: 19 in got())
    for i in range(10, 20):  # 200 ms of it again, as it was sent (a delayed copy)
        send(peer, leg.local_port, origin, i, i, i)
    for i in range(20, 25):  # then the sender goes on after a pause (600 ms later on its clock)
        send(peer, leg.local_port, origin, i, 30 + i, i)
    assert await wait_until(lambda: 24 in got())
    heard = got()
    assert heard == sorted(set(heard)) and heard[-1] == 24  # nothing twice, in order
    assert leg.stats()["late"] >= 10 and leg.stats()["skipped_frames"] == 0
    await leg.close()
    peer.close()
    await c.stop()


async def test_a_straggler_of_the_ssrc_left_is_dropped_and_resets_nothing() -> None:
    peer, leg, c = await started_leg("ssrc-straggler", MediaSettings(jitter_buffer_ms=40))
    a = sender(peer)
    b = (a[0] ^ 0x5A5A5A5A, random.getrandbits(16), random.getrandbits(32))

    def got() -> list[int]:
        return [n for n in (identify(f.pcm) for f in c.frames) if n is not None]

    for i in range(9):  # stream A's packets 0-8; its packet 9 is held up in the network
        send(peer, leg.local_port, a, i, i, i)
    assert await wait_until(lambda: 8 in got())
    for i in range(5):  # the source changes (an SBC fail-over): stream B
        send(peer, leg.local_port, b, i, i, 10 + i)
    send(peer, leg.local_port, a, 9, 9, 9)  # A's packet 9 arrives, behind B's first packets
    for i in range(5, 10):
        send(peer, leg.local_port, b, i, i, 10 + i)
    assert await wait_until(lambda: 19 in got())
    assert got() == list(range(9)) + list(range(10, 20))  # A's straggler never reached the listener
    stats = leg.stats()
    assert stats["ssrc_changes"] == 1 and stats["late"] == 1
    # A comes back for real (its numbering far on from where it stopped): followed
    a_back = (a[0], (a[1] + 3000) & 0xFFFF, random.getrandbits(32))
    for i in range(3):
        send(peer, leg.local_port, a_back, i, i, 30 + i)
    assert await wait_until(lambda: 32 in got())
    assert got()[-3:] == [30, 31, 32]
    assert leg.stats()["ssrc_changes"] == 2
    await leg.close()
    peer.close()
    await c.stop()


async def test_a_copy_of_the_stream_from_before_a_hold_is_not_played_after_the_resume() -> None:
    """Hold and resume by re-INVITE (inactive, then sendrecv: the leg resets its receive
    timeline at both), the caller's stream going on, then a delayed copy of 200 ms sent
    before the hold: numbered a little behind, timed before the timeline began after the
    resume. Not a restarted sender: never played to the caller again."""
    from tests.media.support import media

    peer, leg, c = await started_leg("replay-hold", MediaSettings(jitter_buffer_ms=40), listen=False)
    origin = sender(peer)

    def got() -> list[int]:
        return [n for n in (identify(f.pcm) for f in c.frames) if n is not None]

    for i in range(20):
        send(peer, leg.local_port, origin, i, i, i)
    assert await wait_until(lambda: 19 in got())
    leg.update(media(peer.port, direction="inactive"))  # hold
    leg.update(media(peer.port))  # resume
    for i in range(20, 24):  # the stream goes on, 2 s later on the sender's clock
        send(peer, leg.local_port, origin, i, 100 + i, i)
    assert await wait_until(lambda: 23 in got())
    for i in range(10, 20):  # the copy
        send(peer, leg.local_port, origin, i, i, i)
    for i in range(24, 30):
        send(peer, leg.local_port, origin, i, 100 + i, i)
    assert await wait_until(lambda: 29 in got())
    heard = got()
    assert heard == sorted(set(heard)) and heard[-1] == 29  # nothing twice, in order
    assert leg.stats()["late"] >= 10
    await leg.close()
    peer.close()
    await c.stop()
