"""RFC 3261 §17.1 client transactions over UDP: our requests are retransmitted (timers
A/B/E/F) until their final response. aiosipua leaves this out (DESIGN.md, Wire notes: SIP
stack, gap 1). Server transactions are the sans-I/O table in bridge/sip/server_tx.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aiosipua import SipResponse

from bridge.sip.server_tx import T2_S
from bridge.sip.transport import Peer

Send = Callable[[bytes, Peer, tuple[str, int] | None], object]


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
        self._client: dict[tuple[str, str], _ClientTx] = {}

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

    async def close(self) -> None:
        for ctx in self._client.values():
            if not ctx.future.done():
                ctx.future.cancel()
