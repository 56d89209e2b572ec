"""RFC 3261 §17 timers in bridge.sip.transactions, driven on a real event loop with a short T1
and a recording send function in place of the socket."""

from __future__ import annotations

import asyncio

import pytest
from aiosipua import SipResponse

from bridge.sip.transactions import TransactionLayer, TransactionTimeout
from bridge.sip.transport import Peer

T1 = 0.02
UDP = Peer("udp", ("127.0.0.1", 5060))
TCP = Peer("tcp", ("127.0.0.1", 5060))


class Wire:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def __call__(self, data: bytes, peer: Peer, addr: tuple[str, int] | None) -> None:
        self.sent.append(data)


def _response(code: int) -> SipResponse:
    return SipResponse(status_code=code, reason_phrase="X")


async def test_non_invite_request_is_retransmitted_until_answered() -> None:
    wire = Wire()
    layer = TransactionLayer(wire, T1)
    task = asyncio.create_task(layer.request(b"BYE", "z9hG4bK-1", "BYE", UDP))
    await asyncio.sleep(T1 * 7.5)  # timer E: T1, 2*T1, 4*T1 -> sent at 0, 1, 3, 7 (x T1)
    assert wire.sent == [b"BYE"] * 4
    assert layer.response_received(_response(200), "z9hG4bK-1", "BYE")
    assert (await task).status_code == 200
    assert not layer.response_received(_response(200), "z9hG4bK-1", "BYE")  # done: a stray now
    await layer.close()


async def test_provisional_stops_invite_retransmission() -> None:
    wire = Wire()
    layer = TransactionLayer(wire, T1)
    task = asyncio.create_task(layer.request(b"INVITE", "z9hG4bK-2", "INVITE", UDP))
    await asyncio.sleep(T1 * 1.5)
    seen: list[int] = []
    layer._client[("z9hG4bK-2", "INVITE")].on_provisional = lambda r: seen.append(r.status_code)
    assert layer.response_received(_response(180), "z9hG4bK-2", "INVITE")
    count = len(wire.sent)
    await asyncio.sleep(T1 * 8)
    assert len(wire.sent) == count  # timer A stopped by the 1xx
    assert seen == [180]
    layer.response_received(_response(486), "z9hG4bK-2", "INVITE")
    assert (await task).status_code == 486
    await layer.close()


async def test_no_answer_times_out_after_64_t1_and_tcp_is_not_retransmitted() -> None:
    wire = Wire()
    layer = TransactionLayer(wire, T1)
    with pytest.raises(TransactionTimeout):
        await layer.request(b"OPTIONS", "z9hG4bK-3", "OPTIONS", TCP)
    assert wire.sent == [b"OPTIONS"]  # reliable transport: sent once (§17.1.2.2)
    await layer.close()
