"""RFC 3261 §17 transactions over UDP: server transactions absorb retransmitted requests
(resending our last response), client transactions retransmit our requests (timers A/B/E/F).

aiosipua leaves both out (DESIGN.md, Wire notes: SIP stack, gaps 1 and 2); the state kept here is a
small table swept once a second, so nothing lingers past 64*T1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosipua import SipResponse

from bridge.sip.transport import Peer

T2_S = 4.0
Send = Callable[[bytes, Peer, tuple[str, int] | None], object]


@dataclass(slots=True)
class ServerTx:
    method: str
    peer: Peer
    dest: tuple[str, int]
    expires: float
    last: bytes | None = None
    final_code: int = 0
    timer: asyncio.TimerHandle | None = None
    data: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class _ClientTx:
    method: str
    future: asyncio.Future[SipResponse]
    timer: asyncio.TimerHandle | None = None
    provisional: bool = False
    on_provisional: Callable[[SipResponse], None] | None = None


class TransactionTimeout(TimeoutError):
    """No final response within 64*T1 (timer B/F): the peer is gone."""


class TransactionLayer:
    def __init__(self, send: Send, t1_s: float) -> None:
        self._send = send
        self.t1 = t1_s
        self._server: dict[tuple[str, str, str], ServerTx] = {}
        self._client: dict[tuple[str, str], _ClientTx] = {}
        self._sweeper: asyncio.Task[None] | None = None

    # -- server side ---------------------------------------------------------------------
    def find_server(self, key: tuple[str, str, str]) -> ServerTx | None:
        return self._server.get(key)

    def new_server(
        self, key: tuple[str, str, str], method: str, peer: Peer, dest: tuple[str, int]
    ) -> ServerTx:
        tx = ServerTx(method, peer, dest, time.monotonic() + 64 * self.t1)
        self._server[key] = tx
        self._ensure_sweeper()
        return tx

    def respond(self, tx: ServerTx, response: SipResponse) -> None:
        data = bytes(response)
        tx.last = data
        code = response.status_code
        if code >= 200:
            tx.final_code = code
            # Keep absorbing retransmissions for 64*T1 after the final answer (timers H/J).
            tx.expires = time.monotonic() + 64 * self.t1
        self._send(data, tx.peer, tx.dest)
        if tx.method == "INVITE" and code >= 300 and tx.peer.transport == "udp":
            self._retransmit_final(tx, self.t1)  # timer G, until the ACK

    def _retransmit_final(self, tx: ServerTx, interval: float) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            if tx.last is None or time.monotonic() > tx.expires:
                return
            self._send(tx.last, tx.peer, tx.dest)
            self._retransmit_final(tx, min(interval * 2, T2_S))

        tx.timer = loop.call_later(interval, fire)

    def ack_received(self, tx: ServerTx) -> None:
        if tx.timer is not None:
            tx.timer.cancel()
            tx.timer = None

    def resend_last(self, tx: ServerTx) -> None:
        if tx.last is not None:
            self._send(tx.last, tx.peer, tx.dest)

    # -- client side ---------------------------------------------------------------------
    async def request(
        self, data: bytes, branch: str, method: str, peer: Peer, dest: tuple[str, int] | None = None,
        on_provisional: Callable[[SipResponse], None] | None = None,
    ) -> SipResponse:
        """Send a request and wait for its final response; raises TransactionTimeout."""
        loop = asyncio.get_running_loop()
        tx = _ClientTx(method, loop.create_future(), on_provisional=on_provisional)
        key = (branch, method)
        self._client[key] = tx
        self._send(data, peer, dest)
        if peer.transport == "udp":
            def fire(interval: float) -> None:
                if tx.future.done():
                    return
                if not (tx.provisional and method == "INVITE"):  # timer A stops on 1xx
                    self._send(data, peer, dest)
                nxt = interval * 2 if method == "INVITE" else min(interval * 2, T2_S)
                if tx.provisional and method != "INVITE":
                    nxt = T2_S
                tx.timer = loop.call_later(nxt, fire, nxt)

            tx.timer = loop.call_later(self.t1, fire, self.t1)
        try:
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(tx.future), 64 * self.t1)
                except TimeoutError:
                    # Timer B covers only the wait for a first response: a ringing INVITE waits
                    # until the caller of request() gives up (ring timeout -> CANCEL).
                    if not (method == "INVITE" and tx.provisional):
                        raise TransactionTimeout(f"{method}: no response in {64 * self.t1:.1f} s") from None
        finally:
            if tx.timer is not None:
                tx.timer.cancel()
            self._client.pop(key, None)
            if not tx.future.done():
                tx.future.cancel()

    def response_received(self, response: SipResponse, branch: str, method: str) -> bool:
        """Feed a response to its client transaction; False if none matches (stray)."""
        tx = self._client.get((branch, method))
        if tx is None or tx.future.done():
            return False
        if response.status_code < 200:
            tx.provisional = True
            if tx.on_provisional is not None:
                tx.on_provisional(response)
            return True
        tx.future.set_result(response)
        return True

    # -- housekeeping --------------------------------------------------------------------
    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="sip-tx-sweeper")

    async def _sweep(self) -> None:
        while self._server:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for key in [k for k, tx in self._server.items() if tx.expires < now]:
                tx = self._server.pop(key)
                if tx.timer is not None:
                    tx.timer.cancel()

    @property
    def server_count(self) -> int:
        return len(self._server)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for tx in self._server.values():
            if tx.timer is not None:
                tx.timer.cancel()
        self._server.clear()
        for ctx in self._client.values():
            if not ctx.future.done():
                ctx.future.cancel()
