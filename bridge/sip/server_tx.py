"""RFC 3261 §17.2 server transactions, sans-I/O: typed state, time fed in as an input.

The table never sends or sleeps. `respond`, `retransmitted` and `handle_timer(now)` return
the datagrams to send (`Outgoing`); `next_deadline()` says when `handle_timer` wants to run
next. The asyncio shell (bridge/sip/server.py) owns the only loop timer.

INVITE (§17.2.1, with RFC 6026's Accepted state for 2xx):
    PROCEEDING --1xx--> PROCEEDING (a retransmitted INVITE gets the last 1xx again)
    PROCEEDING --2xx--> ACCEPTED   (Timer L = 64*T1: retransmissions absorbed, 2xx resent by
                                    the UAS core, bridge/sip/ack_wait.py, not here)
    PROCEEDING --3xx-6xx--> COMPLETED (Timer G: resend T1, 2*T1 .. T2 over UDP; Timer H = 64*T1)
    COMPLETED --ACK--> CONFIRMED (Timer I = T4 over UDP)
    any timer end --> TERMINATED (removed)
non-INVITE (§17.2.2):
    TRYING --1xx--> PROCEEDING --final--> COMPLETED (Timer J = 64*T1) --> TERMINATED

Over TCP the RFC sets Timer I and J to 0. We keep Timer J's window as over UDP: a stateless
proxy may forward a UDP caller's retransmission to us over TCP, and the answer must then be
the same one, not a 481. Timer I stays 0 over TCP, as the RFC says (the transaction ends at
the ACK).
"""

from __future__ import annotations

import enum
import heapq
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.sip.peer import Peer

if TYPE_CHECKING:
    from aiosipua import SipRequest

T2_S = 4.0
T4_S = 5.0

TxKey = tuple[str, str, str]  # (branch, Via sent-by, method)


class InviteState(enum.Enum):
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class NonInviteState(enum.Enum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Bytes for the shell to send on `peer`'s path (to `dest` over UDP)."""

    data: bytes
    peer: Peer
    dest: tuple[str, int]


@dataclass(slots=True)
class ServerTx:
    key: TxKey
    method: str
    peer: Peer
    dest: tuple[str, int]
    request: SipRequest
    state: InviteState | NonInviteState
    last: bytes | None = None  # the last response, resent on a retransmitted request
    final_code: int = 0
    to_tag: str | None = None  # the To tag of our responses (one per transaction, §8.2.6.2)
    call_key: tuple[str, str] | None = None  # the call an initial INVITE created (for CANCEL)
    g_at: float | None = None  # Timer G: next resend of a non-2xx final to an INVITE
    g_interval: float = 0.0
    end_at: float | None = None  # Timer H, I, J or L: the transaction ends

    @property
    def is_invite(self) -> bool:
        return self.method == "INVITE"


class ServerTransactions:
    def __init__(self, t1_s: float) -> None:
        self.t1 = t1_s
        self._txs: dict[TxKey, ServerTx] = {}
        # (when, tie-breaker, key): a heap, so the next deadline costs O(log n) at 1000s of
        # transactions. Entries whose transaction or time has changed since are skipped.
        self._due: list[tuple[float, int, TxKey]] = []
        self._seq = itertools.count()

    def _at(self, tx: ServerTx, when: float) -> float:
        heapq.heappush(self._due, (when, next(self._seq), tx.key))
        return when

    def _stale(self, when: float, key: TxKey) -> bool:
        tx = self._txs.get(key)
        return tx is None or when not in (tx.g_at, tx.end_at)

    def __len__(self) -> int:
        return len(self._txs)

    def find(self, key: TxKey) -> ServerTx | None:
        return self._txs.get(key)

    def new(self, key: TxKey, request: SipRequest, peer: Peer, dest: tuple[str, int], now: float) -> ServerTx:
        method = request.method.upper()
        state: InviteState | NonInviteState = (
            InviteState.PROCEEDING if method == "INVITE" else NonInviteState.TRYING)
        # A transaction the TU never answers still leaves the table (a bug must not leak).
        tx = ServerTx(key, method, peer, dest, request, state)
        self._txs[key] = tx
        tx.end_at = self._at(tx, now + 64 * self.t1)
        return tx

    def respond(self, tx: ServerTx, data: bytes, code: int, now: float) -> list[Outgoing]:
        """The TU answers: record the response, move the state, return what to send."""
        if tx.state in (InviteState.TERMINATED, NonInviteState.TERMINATED):
            return []
        tx.last = data
        window = now + 64 * self.t1
        if code < 200:
            if tx.state is NonInviteState.TRYING:
                tx.state = NonInviteState.PROCEEDING
        else:
            tx.final_code = code
            tx.end_at = self._at(tx, window)  # Timer H / J / L
            if not tx.is_invite:
                tx.state = NonInviteState.COMPLETED
            elif code < 300:
                tx.state = InviteState.ACCEPTED
            else:
                tx.state = InviteState.COMPLETED
                if tx.peer.transport == "udp":
                    tx.g_interval = self.t1
                    tx.g_at = self._at(tx, now + self.t1)
        return [Outgoing(data, tx.peer, tx.dest)]

    def retransmitted(self, tx: ServerTx) -> list[Outgoing]:
        """The same request again: the last response again (none yet: nothing, §17.2.2)."""
        if tx.last is None or tx.state is InviteState.CONFIRMED:
            return []
        return [Outgoing(tx.last, tx.peer, tx.dest)]

    def ack(self, tx: ServerTx, now: float) -> None:
        """ACK of a non-2xx final: stop Timer G, absorb late ACKs for T4 (Timer I)."""
        if tx.state is InviteState.COMPLETED:
            tx.state = InviteState.CONFIRMED
            tx.g_at = None
            tx.end_at = self._at(tx, now + (T4_S if tx.peer.transport == "udp" else 0.0))

    def next_deadline(self) -> float | None:
        while self._due and self._stale(*self._due[0][::2]):
            heapq.heappop(self._due)
        return self._due[0][0] if self._due else None

    def handle_timer(self, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        while self._due and self._due[0][0] <= now:
            when, _, key = heapq.heappop(self._due)
            tx = self._txs.get(key)
            if tx is None or when not in (tx.g_at, tx.end_at):
                continue  # superseded
            if tx.end_at is not None and tx.end_at <= now:
                tx.state = InviteState.TERMINATED if tx.is_invite else NonInviteState.TERMINATED
                tx.g_at = None
                del self._txs[key]
            elif tx.g_at is not None and tx.g_at <= now and tx.last is not None:
                out.append(Outgoing(tx.last, tx.peer, tx.dest))
                tx.g_interval = min(tx.g_interval * 2, T2_S)
                tx.g_at = self._at(tx, now + tx.g_interval)
        return out

    def clear(self) -> None:
        self._txs.clear()
        self._due.clear()
