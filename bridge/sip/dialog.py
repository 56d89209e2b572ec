"""Dialogs (RFC 3261 §12-§15): requests inside a call (BYE, re-INVITE/UPDATE, INFO, NOTIFY),
the ACK of our 2xx, and our own requests (BYE, REFER). Implements `DialogControl`, which each
`SipCall` holds to hang up or transfer itself (no reference to the server)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiosipua import SipRequest, SipResponse
from aiosipua.headers import parse_uri

from bridge.metrics import SIP_SEND_FAILURES
from bridge.privacy import mask_phone_numbers
from bridge.sip.ack_wait import AckWait
from bridge.sip.call import SipCall
from bridge.sip.context import SipContext
from bridge.sip.refer import REFER_OUTCOME_TIMEOUT_S, refer_to, uri_host
from bridge.sip.responses import KNOWN_METHODS
from bridge.sip.sdp_offer import SdpError, negotiate, parse_offer
from bridge.sip.server_tx import ServerTx
from bridge.sip.transactions import TransactionTimeout
from bridge.sip.transport import Peer, resolve
from bridge.sip.wire import ALLOW, cseq_of, new_branch, new_request, tag_of

log = logging.getLogger(__name__)

_DTMF_DIGITS = set("0123456789*#ABCD")


class Dialogs:
    def __init__(self, ctx: SipContext) -> None:
        self._ctx = ctx

    def find(self, req: SipRequest) -> SipCall | None:
        return self._ctx.calls.get((req.call_id or "", tag_of(req.get_header("to")) or ""))

    # -- the 2xx until the ACK (§13.3.1.4) -------------------------------------------------
    def await_ack(self, call: SipCall, tx: ServerTx, data: bytes, *, initial: bool) -> None:
        self._ctx.acks.start(call.key, data, tx.peer, tx.dest, self._ctx.clock(), initial=initial)
        self._ctx.rearm()

    def ack_expired(self, wait: AckWait) -> None:
        call = self._ctx.calls.get(wait.key)
        if call is None:
            return
        log.info("no ACK for our 200: ending the call", extra={"call_id": call.info.call_id})
        if wait.initial and call.state == "early":
            call.state = "confirmed"  # the dialog exists; a BYE is the way out (§13.3.1.4)
        self._ctx.spawn(self.bye(call, "ack-timeout"), f"bye-{call.info.call_id}")

    def on_ack(self, call: SipCall, req: SipRequest) -> None:
        if self._ctx.acks.acked(call.key) is None:
            return  # a retransmitted ACK
        codecs: list[str] = list(self._ctx.settings.codecs)
        if call.state == "early":
            if call.late_offer:
                try:
                    if not req.body:
                        raise SdpError("ACK carried no SDP answer to our offer")
                    call.media = negotiate(parse_offer(req.body), codecs)
                except SdpError as exc:
                    log.info("late offer failed: %s", exc, extra={"call_id": call.info.call_id})
                    call.state = "confirmed"
                    self._ctx.spawn(self.bye(call, "error"), f"bye-{call.info.call_id}")
                    return
            call.state = "confirmed"
            self._ctx.app.established(call)
            if call.pending_hangup:
                self._ctx.spawn(self.bye(call, call.pending_hangup), f"bye-{call.info.call_id}")
        elif call.late_offer_pending and req.body:
            call.late_offer_pending = False
            with contextlib.suppress(SdpError):
                call.media = negotiate(parse_offer(req.body), codecs)
                self._ctx.app.media_changed(call)

    # -- requests of the peer in the dialog ------------------------------------------------
    def on_request(self, req: SipRequest, peer: Peer, tx: ServerTx) -> None:
        respond = self._ctx.responder.respond
        method = req.method.upper()
        call = self.find(req)
        if call is None or call.state == "ended":
            respond(tx, 481)
            return
        if peer.transport == "tcp" and call.peer.transport == "tcp" and not (
                call.peer.conn is not None and call.peer.conn.is_open):
            call.peer = peer  # the proxy reconnected: our requests follow its new connection
        seq = cseq_of(req)[0]
        if method != "CANCEL":
            if seq <= call.remote_cseq and method != "PRACK":
                respond(tx, 500, headers={"Retry-After": "1"})
                return
            call.remote_cseq = seq
        if method == "BYE":
            respond(tx, 200)
            self.end(call, "bye")
        elif method in ("INVITE", "UPDATE"):
            self._on_reinvite(call, req, tx)
        elif method == "INFO":
            self._on_info(call, req, tx)
        elif method in ("OPTIONS", "NOTIFY"):
            respond(tx, 200, headers={"Allow": ALLOW} if method == "OPTIONS" else None)
            if method == "NOTIFY":
                call.on_notify(req.get_header("event"), req.body)  # a REFER's progress
        elif method in KNOWN_METHODS:
            respond(tx, 405, headers={"Allow": ALLOW})
        else:
            respond(tx, 501, headers={"Allow": ALLOW})

    def _on_reinvite(self, call: SipCall, req: SipRequest, tx: ServerTx) -> None:
        respond = self._ctx.responder.respond
        if call.state != "confirmed" or call.sdp is None or call.media is None:
            respond(tx, 500, headers={"Retry-After": "1"})  # §14.2: still answering
            return
        body: bytes
        if req.body:
            try:
                codecs = self._ctx.settings.codecs
                prefs = [str(call.media.codec)] + [str(c) for c in codecs if c != call.media.codec]
                media = negotiate(parse_offer(req.body), prefs)
            except SdpError as exc:
                respond(tx, 488, headers={"Warning": f'304 voice-bridge "{str(exc)[:120]}"'})
                return
            call.media = media
            body = call.sdp.answer(media)
            self._ctx.app.media_changed(call)
        else:
            body = call.sdp.answer(call.media)  # an offer; the answer comes in the ACK
            call.late_offer_pending = req.method.upper() == "INVITE"
        headers = {"Contact": self._ctx.addresses.contact_for(call.peer), "Allow": ALLOW}
        data = respond(tx, 200, headers=headers, body=body)
        if req.method.upper() == "INVITE":
            self.await_ack(call, tx, data, initial=False)

    def _on_info(self, call: SipCall, req: SipRequest, tx: ServerTx) -> None:
        ctype = (req.content_type or "").split(";")[0].strip().lower()
        text = req.body.decode("utf-8", "replace")
        digit, duration = "", 160
        if ctype == "application/dtmf-relay":
            for line in text.splitlines():
                name, _, value = line.partition("=")
                if name.strip().lower() == "signal":
                    digit = value.strip().upper()
                elif name.strip().lower() == "duration" and value.strip().isdigit():
                    duration = int(value.strip())
        elif ctype == "application/dtmf":
            digit = text.strip().upper()
        elif req.body:
            accept = "application/dtmf-relay, application/dtmf"
            self._ctx.responder.respond(tx, 415, headers={"Accept": accept})
            return
        digit = {"10": "*", "11": "#"}.get(digit, digit)
        self._ctx.responder.respond(tx, 200)
        if digit in _DTMF_DIGITS and len(digit) == 1:
            self._ctx.app.dtmf(call, digit, duration)

    # -- the end of a call and our requests (DialogControl) ----------------------------------
    def end(self, call: SipCall, reason: str) -> None:
        """Forget the call and tell the app once; the caller of end handles the wire."""
        if call.state == "ended":
            return
        call.state = "ended"
        call.end_reason = reason
        self._ctx.acks.cancel(call.key)
        self._ctx.calls.pop(call.key, None)
        self._ctx.uac_acks.pop(call.info.call_id, None)
        if call.prepared:
            self._ctx.app.ended(call, reason)
        # "call ended" (one line a call, both transports) is the supervisor's
        log.info("dialog ended", extra={"call_id": call.info.call_id, "reason": reason,
                                        "from": mask_phone_numbers(call.info.from_uri)})

    async def hangup(self, call: SipCall, reason: str) -> None:
        if call.state == "ended":
            return
        if call.state == "early" and call.key in self._ctx.acks:
            call.pending_hangup = reason  # §15: BYE only after the ACK (or its timeout)
            return
        if call.state == "early":
            self.end(call, reason)
            return
        await self.bye(call, reason)

    async def bye(self, call: SipCall, reason: str) -> None:
        if call.state == "ended":
            return  # ended meanwhile (the peer's BYE, another hang-up): a second BYE gets 481
        self.end(call, reason)
        with contextlib.suppress(TransactionTimeout, OSError, asyncio.CancelledError):
            resp = await self.request_in_dialog(call, "BYE")
            log.debug("BYE answered %s", resp.status_code, extra={"call_id": call.info.call_id})

    async def refer(self, call: SipCall, target: str) -> bool:
        """Blind transfer as Plivo documents it for trunk calls (bridge/sip/refer.py): a number
        goes to the trunk's domain; success is the NOTIFY's final 2xx, then the peer BYEs us."""
        if call.state != "confirmed":
            return False
        try:
            uri = refer_to(target, uri_host(call.remote_uri))
        except ValueError as exc:
            log.warning("REFER not sent: %s", exc, extra={"call_id": call.info.call_id})
            return False
        call.refer_outcome = asyncio.get_running_loop().create_future()
        referred_by = self._ctx.addresses.contact_for(call.peer)
        try:
            resp = await self.request_in_dialog(call, "REFER",
                                                {"Refer-To": f"<{uri}>", "Referred-By": referred_by})
        except (TransactionTimeout, OSError):
            return False
        log.info("REFER answered %s", resp.status_code, extra={"call_id": call.info.call_id})
        if not 200 <= resp.status_code < 300:
            return False
        try:
            status = await asyncio.wait_for(asyncio.shield(call.refer_outcome), REFER_OUTCOME_TIMEOUT_S)
        except TimeoutError:
            log.warning("REFER: no final NOTIFY in time", extra={"call_id": call.info.call_id})
            return False
        log.info("REFER outcome %s", status, extra={"call_id": call.info.call_id})
        call.transferred = 200 <= status < 300
        return call.transferred

    async def request_in_dialog(self, call: SipCall, method: str,
                                headers: dict[str, str] | None = None) -> SipResponse:
        ctx = self._ctx
        call.local_cseq += 1
        branch = new_branch()
        local_ip = ctx.addresses.local_ip_for(call.peer.addr[0])
        to = f"{call.remote_uri};tag={call.remote_tag}" if call.remote_tag else call.remote_uri
        req = new_request(method, call.remote_target, transport=call.peer.transport, host=local_ip,
                          port=ctx.addresses.bound_port, branch=branch,
                          from_=f"{call.local_uri};tag={call.local_tag}",
                          to=to, call_id=call.info.call_id, cseq=call.local_cseq)
        for route in call.route_set:  # UAS: Record-Route order as received (§12.1.1)
            req.add_header("Route", route)
        req.set_header("Contact", ctx.addresses.contact_for(call.peer))
        req.set_header("User-Agent", ctx.settings.user_agent)
        for name, value in (headers or {}).items():
            req.set_header(name, value)
        try:
            dest = await self.destination(call)
        except (OSError, TimeoutError) as exc:
            SIP_SEND_FAILURES.labels(method, call.peer.transport).inc()
            log.warning("SIP %s not sent: no way to the next hop (%s)", method, exc,
                        extra={"call_id": call.info.call_id})
            raise OSError(f"{method} not sent: {exc}") from exc
        return await ctx.client.request(bytes(req), branch, method, call.peer, dest)

    async def destination(self, call: SipCall) -> tuple[str, int]:
        """Where our in-dialog request goes. Over TCP: the connection the dialog came on while
        it is open; once it is gone (the proxy restarted or closed it), a new connection to
        the next hop, which later requests of the call then use too (RFC 3261 §18.1.1)."""
        host, port = _next_hop(call)
        if call.peer.transport == "tcp":
            if call.peer.conn is not None and call.peer.conn.is_open:
                return call.peer.addr
            addr = await resolve(host, port)
            conn = await self._ctx.connect(addr)
            call.peer = Peer("tcp", conn.addr, conn)
            return conn.addr
        return await resolve(host, port)


def _next_hop(call: SipCall) -> tuple[str, int]:
    """The first Route (the proxy nearest us), else the remote target (§12.2.1.1)."""
    target = call.remote_target
    if call.route_set:
        target = call.route_set[0].strip().lstrip("<").split(">", 1)[0]
    uri = parse_uri(target)
    return uri.host.strip("[]"), uri.port or 5060
