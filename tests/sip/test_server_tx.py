"""The sans-I/O tables on their own: typed state per RFC 3261 §17.2 and the deadlines they
ask for, with time given as a number (no loop, no clock)."""

from __future__ import annotations

from aiosipua import SipRequest

from bridge.sip.ack_wait import AckWaits
from bridge.sip.server_tx import InviteState, NonInviteState, ServerTransactions, ServerTx
from bridge.sip.transport import Peer

UDP = Peer("udp", ("127.0.0.1", 5070))
TCP = Peer("tcp", ("127.0.0.1", 5070))
T1 = 0.5


def _tx(table: ServerTransactions, method: str, n: int, now: float, peer: Peer = UDP) -> ServerTx:
    return table.new((f"z9hG4bK-{n}", "127.0.0.1:5070", method), SipRequest(method=method, uri="sip:a@b"),
                     peer, peer.addr, now)


def test_invite_states_proceeding_completed_confirmed_terminated() -> None:
    table = ServerTransactions(T1)
    tx = _tx(table, "INVITE", 1, 0.0)
    assert tx.state is InviteState.PROCEEDING
    assert [o.data for o in table.respond(tx, b"100", 100, 0.0)] == [b"100"]
    assert table.retransmitted(tx)[0].data == b"100"  # the INVITE again: the 1xx again
    table.respond(tx, b"486", 486, 1.0)
    assert tx.state is InviteState.COMPLETED and table.next_deadline() == 1.0 + T1  # Timer G
    assert [o.data for o in table.handle_timer(1.5)] == [b"486"]
    assert table.next_deadline() == 1.5 + 2 * T1
    table.ack(tx, 2.0)
    assert tx.state is InviteState.CONFIRMED
    assert table.handle_timer(6.9) == [] and len(table) == 1  # absorbing ACKs for T4
    table.handle_timer(7.0)
    assert tx.state is InviteState.TERMINATED and len(table) == 0 and table.next_deadline() is None


def test_invite_2xx_is_accepted_and_not_resent_by_the_transaction() -> None:
    table = ServerTransactions(T1)
    tx = _tx(table, "INVITE", 1, 0.0)
    table.respond(tx, b"200", 200, 0.0)
    assert tx.state is InviteState.ACCEPTED
    assert table.handle_timer(31.9) == []  # the UAS core resends 2xx (ack_wait.py), not Timer G
    assert table.retransmitted(tx)[0].data == b"200"
    table.handle_timer(32.0)  # Timer L
    assert len(table) == 0


def test_non_invite_trying_proceeding_completed_and_timer_j() -> None:
    table = ServerTransactions(T1)
    tx = _tx(table, "BYE", 1, 0.0)
    assert tx.state is NonInviteState.TRYING and table.retransmitted(tx) == []  # nothing to resend yet
    table.respond(tx, b"100", 100, 0.0)
    assert tx.state is NonInviteState.PROCEEDING
    table.respond(tx, b"200", 200, 1.0)
    assert tx.state is NonInviteState.COMPLETED and table.handle_timer(32.9) == [] and len(table) == 1
    table.handle_timer(33.0)
    assert tx.state is NonInviteState.TERMINATED and len(table) == 0


def test_timer_g_is_not_run_over_tcp() -> None:
    table = ServerTransactions(T1)
    tx = _tx(table, "INVITE", 1, 0.0, TCP)
    table.respond(tx, b"486", 486, 0.0)
    assert tx.g_at is None and table.handle_timer(31.0) == []


def test_thousands_of_transactions_end_in_deadline_order() -> None:
    table = ServerTransactions(T1)
    txs = [_tx(table, "OPTIONS", n, n * 0.01) for n in range(3000)]
    for n, tx in enumerate(txs):
        table.respond(tx, b"200", 200, n * 0.01)  # moves each end from 32 s after new to after this
    assert table.next_deadline() == 32.0
    table.handle_timer(32.0 + 1499 * 0.01)
    assert len(table) == 1500 and table.next_deadline() == 32.0 + 1500 * 0.01


def test_ack_wait_resends_until_acked_and_a_new_wait_replaces_the_old() -> None:
    waits = AckWaits(T1)
    key = ("call-1", "tag")
    waits.start(key, b"200-a", UDP, UDP.addr, 0.0, initial=True)
    out, expired = waits.handle_timer(1.5)  # 0.5 and 1.5
    assert [o.data for o in out] == [b"200-a"] and expired == []
    out, _ = waits.handle_timer(1.5)
    assert out == []
    assert waits.acked(key) is not None and waits.acked(key) is None  # a second ACK: nothing waits
    waits.start(key, b"200-b", UDP, UDP.addr, 10.0, initial=False)  # a re-INVITE's 200
    out, _ = waits.handle_timer(10.5)
    assert [o.data for o in out] == [b"200-b"]  # the old wait's deadlines went with it
    _, expired = waits.handle_timer(42.0)
    assert [w.initial for w in expired] == [False]
    assert waits.next_deadline() is None


def test_ack_wait_gives_up_at_64_t1_or_the_override() -> None:
    assert AckWaits(T1).give_up_s == 32.0
    waits = AckWaits(T1, give_up_s=2.0)
    waits.start(("c", "t"), b"200", TCP, TCP.addr, 0.0, initial=True)
    assert waits.handle_timer(1.9) == ([], [])  # over TCP no resends
    _, expired = waits.handle_timer(2.0)
    assert len(expired) == 1
