"""The UAS in-process under a fake clock (tests/sip/uas_harness.py): no SIPp, no sockets.

Each test feeds the bytes a caller would send and checks the bytes we send back, with the
timers run at their deadlines by moving the fake clock (RFC 3261 §13.3.1.4, §17.2, §9, §14).
"""

from __future__ import annotations

import asyncio

from aiosipua import SipRequest, SipResponse

from bridge.sip.transport import Peer, TcpConnection
from tests.sip.corpus import MALFORMED, SDP, UNUSUAL
from tests.sip.uas_harness import CALLER, PORT, Uas, invite, request, response_to, to_tag_of

CALL_ID = "call-1@127.0.0.1"


async def _answered(uas: Uas, *, sdp: bool = True) -> SipResponse:
    await uas.feed(invite(sdp=sdp))
    sent = uas.take()
    assert [m.status_code for m in sent if isinstance(m, SipResponse)] == [100, 180, 200]
    ok = sent[-1]
    assert isinstance(ok, SipResponse)
    return ok


async def _established(uas: Uas) -> str:
    tag = to_tag_of(await _answered(uas))
    await uas.feed(request("ACK", to_tag=tag, branch="z9hG4bK-ack-1"))
    assert ("established", CALL_ID) in uas.app.events
    return tag


def _requests(sent: list[SipRequest | SipResponse], method: str) -> list[SipRequest]:
    return [m for m in sent if isinstance(m, SipRequest) and m.method == method]


async def test_2xx_is_retransmitted_t1_doubling_to_t2_until_the_ack() -> None:
    async with Uas() as uas:
        ok = await _answered(uas)
        await uas.advance(3.6)  # resends at T1, 3*T1, 7*T1 (0.5, 1.5, 3.5 s)
        resent = uas.take()
        assert [m.status_code for m in resent if isinstance(m, SipResponse)] == [200, 200, 200]
        assert all(bytes(m) == bytes(ok) for m in resent)
        await uas.advance(4.0)  # 7.5 s: the next doubling
        assert uas.taken_codes() == [200]
        await uas.advance(4.0)  # capped at T2 = 4 s: 11.5 s
        assert uas.taken_codes() == [200]
        await uas.feed(request("ACK", to_tag=to_tag_of(ok), branch="z9hG4bK-ack-1"))
        await uas.advance(60.0)
        assert uas.take() == []  # the ACK stopped the resends, and nothing ends the call
        assert uas.app.events == [("established", CALL_ID)]
        assert uas.server.call_count == 1


async def test_no_ack_within_64_t1_ends_the_call_with_a_bye() -> None:
    async with Uas() as uas:
        ok = await _answered(uas)
        await uas.advance(31.9)
        assert uas.taken_codes() == [200] * 10  # 0.5 1.5 3.5 7.5, then every 4 s to 31.5
        await uas.advance(0.2)  # 32 s = 64*T1
        bye = _requests(uas.take(), "BYE")
        assert len(bye) == 1 and bye[0].call_id == CALL_ID
        assert to_tag_of(bye[0]) == "caller1" and f";tag={to_tag_of(ok)}" in (bye[0].get_header("from") or "")
        assert ("ended", "ack-timeout") in uas.app.events
        assert uas.server.call_count == 0
        await uas.feed(response_to(bye[0]))


async def test_ack_timeout_setting_still_overrides_64_t1() -> None:
    async with Uas(ack_timeout_s=2.0) as uas:
        await _answered(uas)
        await uas.advance(2.1)
        assert len(_requests(uas.take(), "BYE")) == 1
        assert ("ended", "ack-timeout") in uas.app.events


async def test_retransmitted_invite_gets_the_same_response_and_no_second_call() -> None:
    async with Uas() as uas:
        uas.app.hold_prepare = asyncio.Event()
        await uas.feed(invite())
        first = uas.take()
        assert [m.status_code for m in first if isinstance(m, SipResponse)] == [100]
        await uas.feed(invite())  # the caller's Timer A
        again = uas.take()
        assert [bytes(m) for m in again] == [bytes(m) for m in first]
        uas.app.hold_prepare.set()
        await uas.advance(0)
        codes = uas.taken_codes()
        assert codes == [180, 200]
        await uas.feed(invite())  # after the 2xx (RFC 6026 Accepted): the 200 again
        assert uas.taken_codes() == [200]
        assert len(uas.app.calls) == 1 and uas.server.call_count == 1


async def test_merged_invite_on_a_new_branch_gets_482() -> None:
    async with Uas() as uas:
        await _answered(uas)
        await uas.feed(invite(branch="z9hG4bK-forked-elsewhere"))
        assert uas.taken_codes() == [482]
        assert len(uas.app.calls) == 1


async def test_cancel_before_the_200_gets_200_and_487_retransmitted_until_ack() -> None:
    async with Uas() as uas:
        uas.app.hold_prepare = asyncio.Event()
        await uas.feed(invite())
        uas.take()
        await uas.feed(request("CANCEL", branch="z9hG4bK-INVITE-1"))
        sent = uas.take()
        assert [(m.status_code, m.get_header("cseq")) for m in sent if isinstance(m, SipResponse)] == [
            (200, "1 CANCEL"), (487, "1 INVITE")]
        assert to_tag_of(sent[0]) == to_tag_of(sent[1])  # §9.2: the same To tag
        uas.app.hold_prepare.set()
        await uas.advance(0)
        assert uas.take() == []  # media bound after the CANCEL: no 180/200
        assert uas.app.events == [("ended", "cancel")]
        await uas.advance(0.6)  # Timer G
        assert uas.taken_codes() == [487]
        await uas.feed(request("ACK", branch="z9hG4bK-INVITE-1", to_tag=to_tag_of(sent[1])))
        await uas.advance(40.0)
        assert uas.take() == []  # the ACK stopped Timer G
        assert uas.server.call_count == 0


async def test_487_without_ack_is_resent_until_timer_h() -> None:
    async with Uas() as uas:
        uas.app.hold_prepare = asyncio.Event()
        await uas.feed(invite())
        await uas.feed(request("CANCEL", branch="z9hG4bK-INVITE-1"))
        uas.take()
        await uas.advance(40.0)
        assert uas.taken_codes() == [487] * 10  # G at 0.5 1.5 3.5 7.5, then every 4 s; H at 32 s
        assert uas.server.next_deadline() is None  # the transaction is gone
        uas.app.hold_prepare.set()


async def test_cancel_after_the_200_has_no_effect() -> None:
    async with Uas() as uas:
        ok = await _answered(uas)
        await uas.feed(request("CANCEL", branch="z9hG4bK-INVITE-1"))
        assert uas.taken_codes() == [200]  # the CANCEL's own 200; no 487 (RFC 3261 §9.2)
        await uas.feed(request("ACK", to_tag=to_tag_of(ok), branch="z9hG4bK-ack-1"))
        assert uas.app.events == [("established", CALL_ID)]


async def test_cancel_for_no_transaction_gets_481() -> None:
    async with Uas() as uas:
        await uas.feed(request("CANCEL", branch="z9hG4bK-nothing-like-it"))
        assert uas.taken_codes() == [481]


async def test_late_offer_our_offer_in_the_200_the_answer_in_the_ack() -> None:
    async with Uas() as uas:
        ok = await _answered(uas, sdp=False)
        assert b"m=audio 41000 RTP/AVP" in ok.body
        await uas.feed(request("ACK", to_tag=to_tag_of(ok), branch="z9hG4bK-ack-1", body=SDP))
        assert uas.app.events == [("established", CALL_ID)]
        call = uas.app.calls[0]
        assert call.media is not None and (call.media.remote_port, call.media.codec) == (40000, "PCMU")


async def test_late_offer_without_an_answer_in_the_ack_ends_with_bye() -> None:
    async with Uas() as uas:
        ok = await _answered(uas, sdp=False)
        await uas.feed(request("ACK", to_tag=to_tag_of(ok), branch="z9hG4bK-ack-1"))
        assert len(_requests(uas.take(), "BYE")) == 1
        assert ("ended", "error") in uas.app.events and ("established", CALL_ID) not in uas.app.events


async def test_reinvite_session_refresh_and_hold() -> None:
    async with Uas() as uas:
        tag = await _established(uas)
        # A session refresh (RFC 4028): the same offer again, answered, the 200 resent until ACK.
        await uas.feed(request("INVITE", cseq=2, to_tag=tag, branch="z9hG4bK-re-2", body=SDP))
        ok = uas.take()
        assert [m.status_code for m in ok if isinstance(m, SipResponse)] == [200]
        assert b"a=sendrecv" in ok[0].body
        await uas.advance(0.6)
        assert uas.taken_codes() == [200]
        await uas.feed(request("ACK", cseq=2, to_tag=tag, branch="z9hG4bK-ack-2"))
        # Hold: the caller goes sendonly, we answer recvonly.
        await uas.feed(request("INVITE", cseq=3, to_tag=tag, branch="z9hG4bK-re-3",
                               body=SDP.replace("a=rtpmap:0", "a=sendonly\r\na=rtpmap:0")))
        held = uas.take()
        assert b"a=recvonly" in held[0].body
        await uas.feed(request("ACK", cseq=3, to_tag=tag, branch="z9hG4bK-ack-3"))
        await uas.advance(40.0)
        assert uas.take() == []  # both ACKed: no resends, no BYE
        assert uas.app.events[-1] == ("media_changed", "recvonly")
        # An old CSeq is refused (§12.2.2); a BYE ends the call.
        await uas.feed(request("INVITE", cseq=3, to_tag=tag, branch="z9hG4bK-re-old", body=SDP))
        assert uas.taken_codes() == [500]
        await uas.feed(request("BYE", cseq=4, to_tag=tag, branch="z9hG4bK-bye-4"))
        assert uas.taken_codes() == [200]
        assert uas.app.events[-1] == ("ended", "bye") and uas.server.call_count == 0


async def test_reinvite_without_sdp_takes_the_answer_from_the_ack() -> None:
    async with Uas() as uas:
        tag = await _established(uas)
        await uas.feed(request("INVITE", cseq=2, to_tag=tag, branch="z9hG4bK-re-2"))
        ok = uas.take()
        assert ok[0].status_code == 200 and b"m=audio 41000" in ok[0].body  # our offer
        moved = SDP.replace("m=audio 40000", "m=audio 40100")
        await uas.feed(request("ACK", cseq=2, to_tag=tag, branch="z9hG4bK-ack-2", body=moved))
        assert uas.app.calls[0].media is not None and uas.app.calls[0].media.remote_port == 40100


async def test_non_invite_retransmission_gets_the_same_answer_until_timer_j() -> None:
    async with Uas() as uas:
        await uas.feed(request("OPTIONS", branch="z9hG4bK-opt"))
        first = uas.take()
        await uas.advance(31.0)
        await uas.feed(request("OPTIONS", branch="z9hG4bK-opt"))
        assert [bytes(m) for m in uas.take()] == [bytes(m) for m in first]
        await uas.advance(2.0)  # Timer J (64*T1) ran out: a new transaction, a new To tag
        await uas.feed(request("OPTIONS", branch="z9hG4bK-opt"))
        again = uas.take()
        assert again[0].status_code == 200 and to_tag_of(again[0]) != to_tag_of(first[0])


async def test_malformed_and_unusual_messages_get_their_answer_and_never_crash() -> None:
    async with Uas() as uas:
        for n, case in enumerate(MALFORMED + UNUSUAL):
            await uas.feed(case.render(PORT, CALLER.addr[1], n))
            finals = [c for c in uas.taken_codes() if c >= 200]
            expected = [] if case.status is None else [case.status]
            assert finals[:1] == expected, case.name
        await uas.advance(60.0)  # and every call those left behind times out cleanly
        assert uas.server.next_deadline() is None


async def test_tcp_response_opens_a_connection_to_the_via_when_the_request_one_is_gone() -> None:
    async with Uas() as uas:
        closed = TcpConnection(lambda data, peer: None, lambda conn: None)  # never connected
        fresh = TcpConnection(lambda data, peer: None, lambda conn: None)
        fresh.addr = ("127.0.0.1", 5071)
        uas.wire.connectable[("127.0.0.1", 5071)] = fresh
        options = request("OPTIONS").replace(b"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-OPTIONS-1;rport",
                                             b"SIP/2.0/TCP 127.0.0.1:5071;branch=z9hG4bK-OPTIONS-1")
        await uas.feed(options, Peer("tcp", ("127.0.0.1", 40999), closed))
        assert len(uas.wire.sent) == 1
        sent = uas.wire.sent[0]
        assert sent.peer.conn is fresh and sent.message.status_code == 200  # type: ignore[union-attr]


async def test_hangup_before_the_ack_sends_the_bye_once_the_ack_comes() -> None:
    async with Uas() as uas:
        ok = await _answered(uas)
        call = uas.app.calls[0]
        await call.hangup("agent-finished")  # §15: no BYE before the ACK
        assert _requests(uas.take(), "BYE") == []
        await uas.feed(request("ACK", to_tag=to_tag_of(ok), branch="z9hG4bK-ack-1"))
        bye = _requests(uas.take(), "BYE")
        assert len(bye) == 1
        await uas.feed(response_to(bye[0]))
        assert uas.app.events == [("established", CALL_ID), ("ended", "agent-finished")]


async def test_refer_through_the_call_succeeds_on_the_final_notify() -> None:
    async with Uas() as uas:
        tag = await _established(uas)
        call = uas.app.calls[0]
        transfer = asyncio.create_task(call.refer("+14155550199"))
        await uas.advance(0)
        refer = _requests(uas.take(), "REFER")
        assert len(refer) == 1 and refer[0].get_header("refer-to") == "<sip:+14155550199@127.0.0.1>"
        await uas.feed(response_to(refer[0], 202))
        notify = request("NOTIFY", cseq=2, to_tag=tag, branch="z9hG4bK-notify-2",
                         extra=("Event: refer", "Subscription-State: terminated"))
        body = b"SIP/2.0 200 OK\r\n"
        head = b"Content-Type: message/sipfrag\r\nContent-Length: %d\r\n\r\n" % len(body)
        notify = notify.replace(b"Content-Length: 0\r\n\r\n", head) + body
        await uas.feed(notify)
        assert uas.taken_codes() == [200]
        assert await asyncio.wait_for(transfer, 5.0) is True and call.transferred


async def test_cut_and_corrupted_invites_are_answered_or_dropped_never_raise() -> None:
    whole = invite()
    async with Uas() as uas:
        for n, cut in enumerate(range(0, len(whole), 7)):
            uas.server.receive(whole[:cut].replace(b"call-1@", f"cut-{n}@".encode()), CALLER)
        for n, at in enumerate(range(0, len(whole), 5)):
            data = bytearray(whole.replace(b"call-1@", f"flip-{n}@".encode()))
            data[at % len(data)] ^= 0x5A
            uas.server.receive(bytes(data), CALLER)
        await uas.advance(60.0)  # every call or transaction they started ends cleanly
        assert uas.server.next_deadline() is None


async def test_hung_up_while_binding_media_the_invite_still_gets_a_final_503() -> None:
    async with Uas() as uas:
        uas.app.hold_prepare = asyncio.Event()
        await uas.feed(invite())
        assert uas.taken_codes() == [100]
        await uas.app.calls[0].hangup("shutdown")  # a drain while the RTP port is being bound
        uas.app.hold_prepare.set()
        await uas.advance(0)
        sent = uas.take()
        assert [m.status_code for m in sent if isinstance(m, SipResponse)] == [503]
        assert sent[0].get_header("retry-after") == "5"
        assert uas.app.events == [("ended", "shutdown")]


async def test_an_invite_refused_as_bad_gets_the_same_400_when_retransmitted() -> None:
    # the 400 goes through the INVITE's transaction: if it is lost, the retransmission gets it
    # again (and Timer G resends it) instead of silence until the caller's 64*T1
    no_contact = b"\r\n".join(line for line in invite(7).split(b"\r\n") if not line.startswith(b"Contact:"))
    async with Uas() as uas:
        await uas.feed(no_contact)
        assert 400 in uas.taken_codes()
        await uas.feed(no_contact)
        assert 400 in uas.taken_codes()
        assert uas.app.calls == []  # no call was set up


# -- shutdown: every dialog gets its BYE before the sockets close ---------------------------------
async def test_a_call_answered_as_shutdown_begins_gets_its_bye_when_the_late_ack_comes() -> None:
    async with Uas() as uas:
        ok = await _answered(uas)
        await uas.app.calls[0].hangup("drain")  # the daemon's drain ran out before the ACK came
        stopping = asyncio.create_task(uas.server.stop())
        await uas.advance(0.6)
        assert uas.taken_codes() == [200]  # still resent: the sockets stay up for the ACK
        await uas.feed(request("ACK", to_tag=to_tag_of(ok), branch="z9hG4bK-ack-1"))
        bye = _requests(uas.take(), "BYE")
        assert len(bye) == 1 and bye[0].call_id == CALL_ID
        await uas.feed(response_to(bye[0]))
        await asyncio.wait_for(stopping, 5.0)
        assert uas.server.call_count == 0


async def test_at_shutdown_a_2xx_never_acked_gets_a_bye_after_8_t1_not_64_t1() -> None:
    async with Uas() as uas:
        await _answered(uas)
        stopping = asyncio.create_task(uas.server.stop())
        await uas.advance(3.9)
        assert set(uas.taken_codes()) == {200}  # resent at 0.5, 1.5, 3.5 s; no BYE yet (§15)
        await uas.advance(0.2)
        bye = _requests(uas.take(), "BYE")
        assert len(bye) == 1 and bye[0].call_id == CALL_ID
        await uas.feed(response_to(bye[0]))
        await asyncio.wait_for(stopping, 5.0)
        assert ("ended", "ack-timeout") in uas.app.events


async def test_at_shutdown_a_confirmed_call_gets_a_bye_and_new_invites_get_503() -> None:
    async with Uas() as uas:
        await _established(uas)
        stopping = asyncio.create_task(uas.server.stop())
        await uas.advance(0)
        bye = _requests(uas.take(), "BYE")
        assert len(bye) == 1 and bye[0].call_id == CALL_ID
        await uas.feed(invite(2))
        assert uas.taken_codes() == [503]
        await uas.feed(response_to(bye[0]))
        await asyncio.wait_for(stopping, 5.0)
        assert ("ended", "shutdown") in uas.app.events


async def test_at_shutdown_an_invite_still_binding_media_gets_a_final_503() -> None:
    async with Uas() as uas:
        uas.app.hold_prepare = asyncio.Event()  # never set: the media binding outlasts SIP
        await uas.feed(invite())
        assert uas.taken_codes() == [100]
        await uas.stop()
        assert uas.taken_codes() == [503]
