"""The SIP endpoint's asyncio shell: sockets in, one loop timer, tasks; the logic is elsewhere.

    transport.py   bytes <-> messages over UDP/TCP (a Peer knows the way back)
    server_tx.py   RFC 3261 §17.2 server transactions, sans-I/O (typed state, timers as input)
    ack_wait.py    our 2xx resent until the ACK (§13.3.1.4), sans-I/O
    uas.py         requests outside a dialog: new calls, CANCEL, OPTIONS, refusals
    dialog.py      requests inside a dialog, the ACK, our BYE/REFER (SipCall's DialogControl)
    transactions.py our requests' client transactions (timers A/B/E/F)

The shell parses, absorbs retransmissions, applies the flood limit, routes each request to the
UAS or the dialog layer, sends what they produce, and runs `handle_timer(now)` of the
sans-I/O tables at their `next_deadline()`, so a test drives the whole UAS with a fake clock
and a recording transport (tests/sip/uas_harness.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from aiosipua import SipRequest, SipResponse

from bridge.metrics import SIP_DROPPED, SIP_REQUESTS
from bridge.settings import Secrets
from bridge.settings.sip import SipSettings
from bridge.sip.ack_wait import AckWaits
from bridge.sip.app import CallApp
from bridge.sip.call import SipCall
from bridge.sip.context import Addresses, SipContext
from bridge.sip.dialog import Dialogs
from bridge.sip.responses import Responder, method_label
from bridge.sip.server_tx import InviteState, NonInviteState, Outgoing, ServerTransactions, TxKey
from bridge.sip.transactions import TransactionLayer
from bridge.sip.transport import Peer, SipTransport
from bridge.sip.trust import TrustPolicy
from bridge.sip.uas import Uas, refuse_extensions
from bridge.sip.wire import BadMessage, cseq_of, parse_message, response_destination, tag_of, top_via

log = logging.getLogger(__name__)


# a server transaction that has not sent its final response yet
_AWAITING_FINAL = (InviteState.PROCEEDING, NonInviteState.TRYING, NonInviteState.PROCEEDING)


def _tx_key(req: SipRequest, method: str) -> TxKey:
    via = top_via(req)
    branch = via.branch or ""
    if not branch.startswith("z9hG4bK"):  # RFC 2543 peer: no usable branch
        branch = f"{req.call_id}|{cseq_of(req)[0]}|{tag_of(req.get_header('from'))}"
    return branch, f"{via.host}:{via.port or 5060}", method


class SipServer:
    def __init__(self, settings: SipSettings, app: CallApp, secrets: Secrets, *,
                 clock: Callable[[], float] = time.monotonic, transport: SipTransport | None = None,
                 loop_timer: bool = True) -> None:
        """`clock`, `transport` and `loop_timer=False` are for in-process tests: a fake clock,
        a transport that records what is sent, and `handle_timer(now)` called by the test."""
        t1 = settings.t1_ms / 1000.0
        self._s = settings
        self._clock = clock
        self._loop_timer = loop_timer
        self._transport = transport if transport is not None else SipTransport(self.receive)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = False
        self._stopping = False
        self._ringing: set[asyncio.Event] = set()  # outbound calls until their INVITE's final answer
        self._byes: set[Any] = set()  # dialogs the stop sent a BYE
        self._task_ended = asyncio.Event()
        self.tx = TransactionLayer(self._transport.send, t1)  # client transactions
        self.trust = TrustPolicy(settings.trust, secrets.optional("sip_inbound_password"))
        txs = ServerTransactions(t1)
        self._ctx = SipContext(
            settings=settings, app=app, trust=self.trust, addresses=Addresses(settings), txs=txs,
            acks=AckWaits(t1, settings.ack_timeout_s), client=self.tx,
            responder=Responder(txs, self._send, clock, settings.user_agent), clock=clock,
            send=self._send, spawn=self._spawn, rearm=self._rearm, connect=self._transport.connect)
        self.dialogs = Dialogs(self._ctx)
        self._uas = Uas(self._ctx, self.dialogs)

    @property
    def app(self) -> CallApp:
        return self._ctx.app

    @property
    def settings(self) -> SipSettings:
        return self._s

    @property
    def bound_port(self) -> int:
        return self._ctx.addresses.bound_port

    # -- outbound (UAC) support: bridge/sip/uac.py ---------------------------------------
    def adopt(self, call: SipCall) -> None:
        """An answered outbound call joins the dialog table (in-dialog requests find it)."""
        self._ctx.calls[call.key] = call

    def remember_uac_ack(self, call_id: str, data: bytes, peer: Peer, dest: tuple[str, int]) -> None:
        self._ctx.uac_acks[call_id] = Outgoing(data, peer, dest)

    def forget_uac(self, call_id: str) -> None:
        self._ctx.uac_acks.pop(call_id, None)

    @property
    def stopping(self) -> bool:
        """True once `stop()` began: no new outbound INVITE may start."""
        return self._stopping

    @contextlib.contextmanager
    def ringing(self) -> Iterator[asyncio.Event]:
        """An outbound call being placed, until its INVITE has a final answer. `stop()` sets
        the event: no INVITE goes out after it, one already ringing is CANCELled (§9.1), and
        `stop()` waits, bounded, for the final answer, so a 200 that crosses the CANCEL is
        still ACKed and then BYEd rather than left to the sockets' close."""
        event = asyncio.Event()
        if self._stopping:
            event.set()
        self._ringing.add(event)
        try:
            yield event
        finally:
            self._ringing.discard(event)
            self._task_ended.set()  # _settle looks again

    def send_raw(self, data: bytes, peer: Peer, dest: tuple[str, int]) -> None:
        self._transport.send(data, peer, dest)

    async def destination(self, call: SipCall) -> tuple[str, int]:
        return await self.dialogs.destination(call)

    def local_ip_for(self, remote_ip: str) -> str:
        return self._ctx.addresses.local_ip_for(remote_ip)

    def contact_for(self, peer: Peer) -> str:
        return self._ctx.addresses.contact_for(peer)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self._transport.start(self._s.listen_host, self._s.listen_port, list(self._s.transports))
        self._ctx.addresses.bound_port = self._transport.port

    def set_draining(self, draining: bool) -> None:
        self._ctx.draining = draining

    @property
    def call_count(self) -> int:
        return len(self._ctx.calls)

    async def stop(self, ack_wait_s: float | None = None, bye_wait_s: float | None = None) -> None:
        """Hang up every dialog before the sockets close, then close them.

        A confirmed dialog gets a BYE now. One whose 2xx is out but not yet ACKed (answered
        just as shutdown began) gets its BYE when the ACK comes (§15: not before it), the 2xx
        still resent meanwhile; if no ACK comes within ``ack_wait_s`` (default 8*T1, 4 s),
        the BYE goes anyway: the caller has our 200 and believes it is in a call, and a BYE
        sooner than 64*T1 beats leaving it in silence. The BYE transactions get
        ``bye_wait_s`` (default 4*T1: two UDP retransmissions) to be answered; new INVITEs
        are refused (503) meanwhile."""
        if self._stopped:
            return
        ctx, t1 = self._ctx, self._s.t1_ms / 1000
        ctx.draining = True
        self._stopping = True
        for ringing in self._ringing:
            ringing.set()
        give_up_at = self._clock() + (8 * t1 if ack_wait_s is None else ack_wait_s)
        self._bye_confirmed()
        for call in list(ctx.calls.values()):
            if call.state == "confirmed":
                continue
            if call.key in ctx.acks:
                call.pending_hangup = call.pending_hangup or "shutdown"
                ctx.acks.hurry(call.key, give_up_at)  # its expiry sends the BYE (ack_expired)
            else:
                self.dialogs.end(call, "shutdown")  # not answered yet: _answer sends the 503
        self._rearm()
        await self._settle(give_up_at, 4 * t1 if bye_wait_s is None else bye_wait_s)
        self._stopped = True
        for call in list(ctx.calls.values()):  # its ACK wait outlived the bound (a test's clock)
            self.dialogs.end(call, "shutdown")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._ctx.txs.clear()
        self._ctx.acks.clear()
        await self.tx.close()
        await self._transport.stop()

    def _bye_confirmed(self) -> None:
        """A BYE for every confirmed dialog not yet sent one: at the start of the stop and
        again while it settles (an outbound call answered meanwhile is confirmed then)."""
        for call in list(self._ctx.calls.values()):
            if call.state == "confirmed" and call.key not in self._byes:
                self._byes.add(call.key)
                self._spawn(self.dialogs.bye(call, "shutdown"), f"bye-{call.info.call_id}")

    async def _settle(self, give_up_at: float, bye_wait_s: float) -> None:
        """Until no dialog is left, no outbound INVITE still rings and our BYEs are answered,
        bounded: the ACK wait (on the server's clock, whose timer sends the BYEs) and then
        ``bye_wait_s``."""
        loop = asyncio.get_running_loop()
        ack_wait = max(0.0, give_up_at - self._clock())
        deadline = loop.time() + ack_wait + bye_wait_s + 0.5
        def busy() -> bool:
            return bool(self._ctx.calls or self._ringing
                        or any(t.get_name().startswith("bye-") for t in self._tasks))

        while busy() and loop.time() < deadline:
            # a task ending (a BYE answered) wakes us; a dialog the peer ends has no task: look again
            self._bye_confirmed()
            self._task_ended.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._task_ended.wait(), 0.05)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._task_ended.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("SIP task failed", exc_info=task.exception())

    # -- time: the one loop timer ----------------------------------------------------------
    def next_deadline(self) -> float | None:
        times = [t for t in (self._ctx.txs.next_deadline(), self._ctx.acks.next_deadline()) if t is not None]
        return min(times, default=None)

    def handle_timer(self, now: float) -> None:
        """Run every timer due at `now`: Timer G/H/I/J/L, 2xx resends, ACK give-ups (-> BYE)."""
        self._send(self._ctx.txs.handle_timer(now))
        resend, expired = self._ctx.acks.handle_timer(now)
        self._send(resend)
        for wait in expired:
            self.dialogs.ack_expired(wait)

    def _rearm(self) -> None:
        if not self._loop_timer:
            return
        deadline = self.next_deadline()
        if deadline is None or (self._timer is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        delay = max(0.0, deadline - self._clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_loop_timer)

    def _on_loop_timer(self) -> None:
        self._timer = None
        self.handle_timer(self._clock())
        self._rearm()

    # -- egress ----------------------------------------------------------------------------
    def _send(self, out: list[Outgoing]) -> None:
        for o in out:
            if o.peer.transport == "tcp" and not (o.peer.conn is not None and o.peer.conn.is_open):
                # RFC 3261 §18.2.2: the connection the request came on is gone: open one to
                # the Via's received/rport (or sent-by port) and answer there.
                self._spawn(self._send_reconnected(o), "sip-tcp-reconnect")
                continue
            self._transport.send(o.data, o.peer, o.dest)
        self._rearm()

    async def _send_reconnected(self, o: Outgoing) -> None:
        try:
            conn = await self._transport.connect(o.dest)
        except (OSError, TimeoutError) as exc:
            log.info("TCP response not sent: cannot reconnect (%s)", exc,
                     extra={"peer": f"{o.dest[0]}:{o.dest[1]}"})
            self._transport.send(o.data, Peer("tcp", o.dest), o.dest)  # counted as unsent
            return
        self._transport.send(o.data, Peer("tcp", conn.addr, conn), conn.addr)

    # -- ingress ---------------------------------------------------------------------------
    def receive(self, data: bytes, peer: Peer) -> None:
        """One message from the wire. Malformed input gets a 400 (requests) or is dropped."""
        try:
            msg = parse_message(data, stream=peer.transport == "tcp")
        except BadMessage as exc:
            SIP_DROPPED.labels("malformed").inc()
            log.info("bad SIP message: %s", exc.reason, extra={"peer": peer.addr[0], "status": exc.status})
            req = exc.request
            if exc.status and req is not None and req.method != "ACK":
                self._ctx.responder.reply_stateless(req, peer, exc.status, exc.reason)
            return
        if isinstance(msg, SipResponse):
            self._on_response(msg)
            return
        SIP_REQUESTS.labels(method_label(msg.method)).inc()
        try:
            self._on_request(msg, peer)
        except BadMessage as exc:
            SIP_DROPPED.labels("malformed").inc()
            if exc.status and msg.method != "ACK":
                self._refuse(msg, peer, exc)
        finally:
            self._rearm()

    def _refuse(self, req: SipRequest, peer: Peer, exc: BadMessage) -> None:
        """A request found bad after its transaction was made (e.g. an INVITE without a usable
        Contact) is answered through it, so a retransmission gets the same answer again (the
        caller does not hang for 64*T1 if the first one is lost); otherwise statelessly."""
        try:
            tx = self._ctx.txs.find(_tx_key(req, req.method.upper()))
        except (BadMessage, IndexError, ValueError):
            tx = None
        if tx is None or tx.state not in _AWAITING_FINAL:
            self._ctx.responder.reply_stateless(req, peer, exc.status, exc.reason)
            return
        warning = {"Warning": f'399 voice-bridge "{exc.reason[:100]}"'} if exc.status == 400 else None
        self._ctx.responder.respond(tx, exc.status, headers=warning)

    def _on_response(self, resp: SipResponse) -> None:
        try:
            branch = top_via(resp).branch or ""
            method = cseq_of(resp)[1]
        except (BadMessage, IndexError, ValueError):
            SIP_DROPPED.labels("malformed").inc()
            return
        if self.tx.response_received(resp, branch, method):
            return
        ack = self._ctx.uac_acks.get(resp.call_id or "")
        if ack is not None and method == "INVITE" and resp.status_code >= 200:
            self._transport.send(ack.data, ack.peer, ack.dest)  # the far end missed our ACK
            return
        SIP_DROPPED.labels("stray-response").inc()

    def _on_request(self, req: SipRequest, peer: Peer) -> None:
        ctx = self._ctx
        method = req.method.upper()
        if method == "ACK":
            self._on_ack(req)
            return
        key = _tx_key(req, method)
        existing = ctx.txs.find(key)
        if existing is not None:
            self._send(ctx.txs.retransmitted(existing))  # same answer, never a second call
            return
        to_tag = tag_of(req.get_header("to"))
        # Every request from an untrusted source counts against its flood limit (REGISTER,
        # MESSAGE, SUBSCRIBE, BYE to made-up dialogs... not only INVITE), except requests in
        # a dialog we have: a flood must not get an answer per request (amplification).
        ongoing = bool(to_tag) and (req.call_id or "", to_tag or "") in ctx.calls
        verdict = "ok" if ongoing else self.trust.rate(peer.addr[0])
        if verdict == "drop":
            SIP_DROPPED.labels("rate-limit").inc()
            return
        # UDP: to the Via's received/rport; TCP: on the connection, this address if it is gone.
        dest = response_destination(req, peer.addr)
        tx = ctx.txs.new(key, req, peer, dest, self._clock())
        if verdict == "reject":
            ctx.responder.respond(tx, 503, headers={"Retry-After": str(self._s.retry_after_s)})
            return
        if refuse_extensions(ctx, tx):
            return
        if to_tag:
            self.dialogs.on_request(req, peer, tx)
        else:
            self._uas.on_request(req, peer, tx)

    def _on_ack(self, req: SipRequest) -> None:
        call = self.dialogs.find(req)
        if call is not None:
            self.dialogs.on_ack(call, req)
            return
        # ACK for a non-2xx final response: it ends that INVITE server transaction.
        invite_tx = self._ctx.txs.find(_tx_key(req, "INVITE"))
        if invite_tx is not None:
            self._ctx.txs.ack(invite_tx, self._clock())
