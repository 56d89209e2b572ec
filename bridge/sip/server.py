"""The SIP user agent server: routes each message to a transaction, a dialog or a new call.

RFC 3261 behaviour the libraries leave to us lives here: retransmitted INVITEs are absorbed
(never a second call), 2xx is retransmitted until the ACK and the call is torn down without
one, CANCEL gets 200 + 487, late offer is answered with an offer in the 200 and the answer is
taken from the ACK, and every call leaves the tables when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Coroutine
from typing import Any

from aiosipua import SipRequest, SipResponse
from aiosipua.headers import parse_uri, stringify_uri

from bridge.callmodel import CallInfo
from bridge.metrics import SIP_DROPPED, SIP_REQUESTS, SIP_RESPONSES
from bridge.privacy import mask_phone_numbers
from bridge.settings import Secrets
from bridge.settings.sip import SipSettings
from bridge.sip.app import CallApp
from bridge.sip.call import SipCall
from bridge.sip.sdp_offer import SdpError, SessionDescription, negotiate, parse_offer
from bridge.sip.transactions import T2_S, ServerTx, TransactionLayer, TransactionTimeout
from bridge.sip.transport import Peer, SipTransport, resolve
from bridge.sip.wire import (
    ALLOW,
    BadMessage,
    build_response,
    cseq_of,
    new_branch,
    new_request,
    new_tag,
    parse_message,
    response_destination,
    tag_of,
    top_via,
)

log = logging.getLogger(__name__)

KNOWN_METHODS = {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "UPDATE", "NOTIFY", "REFER",
                 "REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "PRACK"}
REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 202: "Accepted", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 405: "Method Not Allowed", 415: "Unsupported Media Type",
           416: "Unsupported URI Scheme", 420: "Bad Extension",
           481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
           487: "Request Terminated", 488: "Not Acceptable Here", 500: "Server Internal Error",
           501: "Not Implemented",
           503: "Service Unavailable", 505: "Version Not Supported"}
_DTMF_DIGITS = set("0123456789*#ABCD")
SUPPORTED_OPTIONS = {"replaces"}  # what we put in Supported: the only Require tags we accept


def _method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


class SipServer:
    def __init__(self, settings: SipSettings, app: CallApp, secrets: Secrets) -> None:
        from bridge.sip.trust import TrustPolicy

        self._s = settings
        self._app = app
        self._transport = SipTransport(self._on_message)
        self.tx = TransactionLayer(self._transport.send, settings.t1_ms / 1000.0)
        self.trust = TrustPolicy(settings.trust, secrets.optional("sip_inbound_password"))
        self._calls: dict[tuple[str, str], SipCall] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._local_ips: dict[str, str] = {}
        self._draining = False
        self.bound_port = 0
        # Outbound calls: the last ACK per Call-ID, resent when the far end repeats its final.
        self._uac_acks: dict[str, tuple[bytes, Peer, tuple[str, int]]] = {}

    @property
    def app(self) -> CallApp:
        return self._app

    @property
    def settings(self) -> SipSettings:
        return self._s

    # -- outbound (UAC) support: bridge/sip/uac.py ---------------------------------------
    def adopt(self, call: SipCall) -> None:
        """An answered outbound call joins the dialog table (in-dialog requests find it)."""
        self._calls[call.key] = call

    def remember_uac_ack(self, call_id: str, data: bytes, peer: Peer, dest: tuple[str, int]) -> None:
        self._uac_acks[call_id] = (data, peer, dest)

    def forget_uac(self, call_id: str) -> None:
        self._uac_acks.pop(call_id, None)

    def send_raw(self, data: bytes, peer: Peer, dest: tuple[str, int]) -> None:
        self._transport.send(data, peer, dest)

    async def destination(self, call: SipCall) -> tuple[str, int]:
        return await self._destination(call)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self._transport.start(self._s.listen_host, self._s.listen_port, list(self._s.transports))
        self.bound_port = self._transport.port

    def set_draining(self, draining: bool) -> None:
        self._draining = draining

    @property
    def call_count(self) -> int:
        return len(self._calls)

    async def stop(self) -> None:
        for call in list(self._calls.values()):
            self._end(call, "shutdown")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.tx.close()
        await self._transport.stop()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SIP task failed", exc_info=task.exception())

    # -- addresses -----------------------------------------------------------------------
    def local_ip_for(self, remote_ip: str) -> str:
        """The address to advertise to this peer: public_address, the bound address, or the
        interface the kernel would route to the peer from."""
        if self._s.public_address:
            return self._s.public_address
        if self._s.listen_host not in ("", "0.0.0.0"):
            return self._s.listen_host
        ip = self._local_ips.get(remote_ip)
        if ip is None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.connect((remote_ip, 9))  # no packet is sent: this only picks the route
                    ip = s.getsockname()[0]
                except OSError:
                    ip = "127.0.0.1"
            self._local_ips[remote_ip] = ip
        return ip

    def contact_for(self, peer: Peer) -> str:
        host = self.local_ip_for(peer.addr[0])
        return f"<sip:{self._s.user}@{host}:{self.bound_port};transport={peer.transport}>"

    # -- ingress -------------------------------------------------------------------------
    def _on_message(self, data: bytes, peer: Peer) -> None:
        try:
            msg = parse_message(data, stream=peer.transport == "tcp")
        except BadMessage as exc:
            SIP_DROPPED.labels("malformed").inc()
            log.info("bad SIP message: %s", exc.reason, extra={"peer": peer.addr[0], "status": exc.status})
            req = exc.request
            if exc.status and req is not None and req.method != "ACK":
                self._reply_stateless(req, peer, exc.status, exc.reason)
            return
        if isinstance(msg, SipResponse):
            self._on_response(msg)
            return
        SIP_REQUESTS.labels(_method_label(msg.method)).inc()
        try:
            self._on_request(msg, peer)
        except BadMessage as exc:
            SIP_DROPPED.labels("malformed").inc()
            if exc.status and msg.method != "ACK":
                self._reply_stateless(msg, peer, exc.status, exc.reason)

    def _reply_stateless(self, req: SipRequest, peer: Peer, code: int, warning: str = "") -> None:
        headers = {"Warning": f'399 voice-bridge "{warning[:100]}"'} if warning and code == 400 else {}
        resp = build_response(req, code, REASONS.get(code, "Error"), headers=headers, to_tag=new_tag(),
                              source=peer.addr)
        with contextlib.suppress(BadMessage, IndexError, ValueError):
            self._transport.send(bytes(resp), peer, response_destination(req, peer.addr))
        SIP_RESPONSES.labels(_method_label(req.method), str(code)).inc()

    def _tx_key(self, req: SipRequest, method: str) -> tuple[str, str, str]:
        via = top_via(req)
        branch = via.branch or ""
        if not branch.startswith("z9hG4bK"):  # RFC 2543 peer: no usable branch
            branch = f"{req.call_id}|{cseq_of(req)[0]}|{tag_of(req.get_header('from'))}"
        return branch, f"{via.host}:{via.port or 5060}", method

    def _on_request(self, req: SipRequest, peer: Peer) -> None:
        method = req.method.upper()
        if method == "ACK":
            self._on_ack(req, peer)
            return
        key = self._tx_key(req, method)
        existing = self.tx.find_server(key)
        if existing is not None:
            self.tx.resend_last(existing)  # a retransmission: same answer, never a second call
            return
        dest = response_destination(req, peer.addr) if peer.transport == "udp" else peer.addr
        tx = self.tx.new_server(key, method, peer, dest)
        to_tag = tag_of(req.get_header("to"))
        if to_tag:
            if not self._refuse_extensions(tx, req):
                self._in_dialog(req, peer, tx, to_tag)
            return
        ip = peer.addr[0]
        if method in ("INVITE", "OPTIONS", "CANCEL"):
            verdict = self.trust.rate(ip)
            if verdict == "drop":
                SIP_DROPPED.labels("rate-limit").inc()
                return
            if verdict == "reject":
                self._respond(tx, req, 503, headers={"Retry-After": str(self._s.retry_after_s)})
                return
        if self._refuse_extensions(tx, req):
            return
        if method == "INVITE":
            if self._merged(req):
                self._respond(tx, req, 482)
                return
            self._on_invite(req, peer, tx)
        elif method == "OPTIONS":
            self._on_options(req, peer, tx)
        elif method == "CANCEL":
            self._on_cancel(req, tx)
        elif method in ("BYE", "INFO", "UPDATE", "NOTIFY", "PRACK"):
            self._respond(tx, req, 481)
        elif method in KNOWN_METHODS:
            self._respond(tx, req, 405, headers={"Allow": ALLOW})
        else:
            self._respond(tx, req, 501, headers={"Allow": ALLOW})

    def _refuse_extensions(self, tx: ServerTx, req: SipRequest) -> bool:
        """420 for a Require we do not support (§8.2.2.3; CANCEL never carries one)."""
        if req.method.upper() == "CANCEL":
            return False
        tags = [t.strip() for v in req.get_header_values("require") for t in v.split(",") if t.strip()]
        unsupported = [t for t in tags if t.lower() not in SUPPORTED_OPTIONS]
        if unsupported:
            self._respond(tx, req, 420, headers={"Unsupported": ", ".join(unsupported)})
        return bool(unsupported)

    def _merged(self, req: SipRequest) -> bool:
        """An INVITE for a call we already have, on a new branch (RFC 3261 §8.2.2.2: a merged
        request, e.g. forked twice upstream or re-sent by a confused UA). A second call on the same
        Call-ID would clash with the first, so it gets 482; true retransmissions (same branch)
        never get here, the transaction layer absorbed them."""
        call_id, from_tag = req.call_id or "", tag_of(req.get_header("from")) or ""
        return any(c.info.call_id == call_id and c.remote_tag == from_tag for c in self._calls.values())

    def _on_options(self, req: SipRequest, peer: Peer, tx: ServerTx) -> None:
        """200 with our capabilities, or 503 + Retry-After while we would refuse an INVITE
        (draining, at capacity): dispatchers (Kamailio's ds_ping) probe with OPTIONS and stop
        routing new calls to a node that answers 503 (RFC 3261 §11.2: the answer to OPTIONS is
        the one an INVITE would get)."""
        why = "draining" if self._draining else self._app.unavailable()
        if why is None:
            self._respond(tx, req, 200, headers=self._capabilities(peer))
            return
        log.debug("OPTIONS answered 503: %s", why, extra={"peer": peer.addr[0]})
        self._respond(tx, req, 503, headers={"Retry-After": str(self._s.retry_after_s)})

    def _capabilities(self, peer: Peer) -> dict[str, str]:
        return {"Allow": ALLOW, "Accept": "application/sdp, application/dtmf-relay, application/dtmf",
                "Supported": "replaces", "Contact": self.contact_for(peer), "User-Agent": self._s.user_agent}

    def _respond(self, tx: ServerTx, req: SipRequest, code: int, *, to_tag: str | None = None,
                 headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        if code > 100 and to_tag is None and not tag_of(req.get_header("to")):
            to_tag = str(tx.data.setdefault("to_tag", new_tag()))
        all_headers = {"User-Agent": self._s.user_agent} if code >= 200 else {}
        all_headers.update(headers or {})
        resp = build_response(req, code, REASONS.get(code, "OK"), to_tag=to_tag, headers=all_headers,
                              body=body, source=tx.peer.addr)
        self.tx.respond(tx, resp)
        SIP_RESPONSES.labels(_method_label(req.method), str(code)).inc()

    def _on_response(self, resp: SipResponse) -> None:
        try:
            branch = top_via(resp).branch or ""
            method = cseq_of(resp)[1]
        except (BadMessage, IndexError, ValueError):
            SIP_DROPPED.labels("malformed").inc()
            return
        if self.tx.response_received(resp, branch, method):
            return
        ack = self._uac_acks.get(resp.call_id or "")
        if ack is not None and method == "INVITE" and resp.status_code >= 200:
            self._transport.send(ack[0], ack[1], ack[2])  # the far end missed our ACK
            return
        SIP_DROPPED.labels("stray-response").inc()

    # -- new calls -----------------------------------------------------------------------
    def _on_invite(self, req: SipRequest, peer: Peer, tx: ServerTx) -> None:
        ip = peer.addr[0]
        if self._draining:
            self._respond(tx, req, 503, headers={"Retry-After": str(self._s.retry_after_s)})
            return
        if not self.trust.is_trusted(ip):
            if self.trust.locked_out(ip):
                self._respond(tx, req, 403)
                return
            if not self.trust.can_challenge:
                log.info("INVITE from an untrusted source refused", extra={"peer": ip})
                self._respond(tx, req, 403)
                return
            if not self.trust.verify(ip, "INVITE", req.get_header("authorization")):
                self._challenge(tx, req)
                return
        from_addr, to_addr = req.from_addr, req.to_addr
        assert from_addr is not None and to_addr is not None  # checked by parse_message
        contacts = req.contact
        if not contacts or not contacts[0].uri.host:
            raise BadMessage("INVITE without a usable Contact", 400)
        info = CallInfo(
            call_id=req.call_id or "",
            from_uri=stringify_uri(from_addr.uri),
            to_uri=stringify_uri(to_addr.uri),
            source=peer.addr,
            plivo_headers={name[5:]: values[0] for name, values in req.headers.items()
                           if name.lower().startswith("x-ph-") and values},
        )
        refusal = self._app.admit(info)
        if refusal is not None:
            code, reason = refusal
            extra = {"Retry-After": str(self._s.retry_after_s)} if code == 503 else {}
            self._respond(tx, req, code, headers=extra)
            log.info("call refused: %s", reason, extra={"call_id": info.call_id, "code": code})
            return
        media = None
        ctype = (req.content_type or "").lower()
        if req.body and "application/sdp" in ctype:
            try:
                media = negotiate(parse_offer(req.body), list(self._s.codecs))
            except SdpError as exc:
                log.info("488: %s", exc, extra={"call_id": info.call_id})
                self._respond(tx, req, 488, headers={"Warning": f'304 voice-bridge "{str(exc)[:120]}"'})
                return
        elif req.body:
            self._respond(tx, req, 415, headers={"Accept": "application/sdp"})
            return
        call = SipCall(
            info=info, server=self, peer=peer, local_tag=new_tag(), remote_tag=from_addr.tag or "",
            local_uri=_without_tag(req.get_header("to") or ""),
            remote_uri=_without_tag(req.get_header("from") or ""),
            remote_target=stringify_uri(contacts[0].uri),
            route_set=req.get_header_values("record-route"),
            remote_cseq=cseq_of(req)[0], late_offer=media is None, invite_branch=top_via(req).branch or "",
        )
        tx.data["call"] = call
        tx.data["request"] = req
        tx.data["to_tag"] = call.local_tag
        self._calls[call.key] = call
        self._respond(tx, req, 100)
        self._spawn(self._answer(call, req, tx, media), f"answer-{info.call_id}")

    def _challenge(self, tx: ServerTx, req: SipRequest) -> None:
        to_tag = str(tx.data.setdefault("to_tag", new_tag()))
        resp = build_response(req, 401, "Unauthorized", to_tag=to_tag, source=tx.peer.addr,
                              headers={"User-Agent": self._s.user_agent})
        for value in self.trust.challenges():
            resp.add_header("WWW-Authenticate", value)
        self.tx.respond(tx, resp)
        SIP_RESPONSES.labels("INVITE", "401").inc()

    async def _answer(self, call: SipCall, req: SipRequest, tx: ServerTx, media: Any) -> None:
        try:
            host, port = await self._app.prepare(call)
        except Exception as exc:  # ports exhausted, socket errors: refuse, don't crash
            log.warning("call setup failed: %s", exc, extra={"call_id": call.info.call_id})
            self._calls.pop(call.key, None)
            if call.state != "ended":
                call.state = "ended"
                self._respond(tx, req, 503, to_tag=call.local_tag,
                              headers={"Retry-After": str(self._s.retry_after_s)})
            self._app.ended(call, "error")
            return
        call.prepared = True
        if call.state == "ended":  # CANCELed while we were binding media
            self._app.ended(call, call.end_reason or "cancel")
            return
        if host in ("", "0.0.0.0"):
            host = self.local_ip_for(call.peer.addr[0])
        if self._s.public_address:
            host = self._s.public_address
        call.sdp = SessionDescription(host, port, self._s.user_agent)
        if media is not None:
            call.media = media
            body = call.sdp.answer(media)
        else:
            body = call.sdp.offer(list(self._s.codecs), 101)
        contact = {"Contact": self.contact_for(call.peer)}
        self._respond(tx, req, 180, to_tag=call.local_tag, headers=contact)
        if self._s.answer_delay_ms:
            try:
                await asyncio.sleep(self._s.answer_delay_ms / 1000)
            finally:
                # Hung up (drain, shutdown: the sleep is cancelled) while ringing: the INVITE still
                # needs a final answer. After a CANCEL it already has one (487).
                if call.state == "ended" and not tx.final_code:
                    self._respond(tx, req, 503, to_tag=call.local_tag,
                                  headers={"Retry-After": str(self._s.retry_after_s)})
            if call.state == "ended":
                return
        ok_headers = {**contact, "Allow": ALLOW, "Supported": "replaces"}
        self._respond(tx, req, 200, to_tag=call.local_tag, headers=ok_headers, body=body)
        self._await_ack(call, tx, initial=True)

    def _await_ack(self, call: SipCall, tx: ServerTx, *, initial: bool) -> None:
        """Retransmit our 2xx until the ACK (RFC 3261 §13.3.1.4); no ACK in time ends the call."""
        loop = asyncio.get_running_loop()
        data = tx.last
        call.awaiting_ack = True

        def resend(interval: float) -> None:
            if not call.awaiting_ack or data is None:
                return
            if call.peer.transport == "udp":
                self._transport.send(data, call.peer, tx.dest)
            nxt = min(interval * 2, T2_S)
            call.timers.append(loop.call_later(nxt, resend, nxt))

        def give_up() -> None:
            if not call.awaiting_ack:
                return
            call.awaiting_ack = False
            log.info("no ACK for our 200: ending the call", extra={"call_id": call.info.call_id})
            if initial and call.state == "early":
                call.state = "confirmed"  # the dialog exists; a BYE is the way out (§13.3.1.4)
            self._spawn(self._bye(call, "ack-timeout"), f"bye-{call.info.call_id}")

        if call.peer.transport == "udp":
            call.timers.append(loop.call_later(self.tx.t1, resend, self.tx.t1))
        call.timers.append(loop.call_later(self._s.ack_timeout_s, give_up))

    def _on_ack(self, req: SipRequest, peer: Peer) -> None:
        to_tag = tag_of(req.get_header("to"))
        call = self._calls.get((req.call_id or "", to_tag or ""))
        if call is None:
            # ACK for a non-2xx final response: it ends that INVITE server transaction.
            invite_tx = self.tx.find_server(self._tx_key(req, "INVITE"))
            if invite_tx is not None:
                self.tx.ack_received(invite_tx)
            return
        if not call.awaiting_ack:
            return  # a retransmitted ACK
        call.awaiting_ack = False
        call.cancel_timers()
        if call.state == "early":
            if call.late_offer:
                try:
                    if not req.body:
                        raise SdpError("ACK carried no SDP answer to our offer")
                    call.media = negotiate(parse_offer(req.body), list(self._s.codecs))
                except SdpError as exc:
                    log.info("late offer failed: %s", exc, extra={"call_id": call.info.call_id})
                    call.state = "confirmed"
                    self._spawn(self._bye(call, "error"), f"bye-{call.info.call_id}")
                    return
            call.state = "confirmed"
            self._app.established(call)
            if call.pending_hangup:
                self._spawn(self._bye(call, call.pending_hangup), f"bye-{call.info.call_id}")
        elif call.late_offer_pending and req.body:
            call.late_offer_pending = False
            with contextlib.suppress(SdpError):
                call.media = negotiate(parse_offer(req.body), list(self._s.codecs))
                self._app.media_changed(call)

    def _on_cancel(self, req: SipRequest, tx: ServerTx) -> None:
        invite_tx = self.tx.find_server(self._tx_key(req, "INVITE"))
        if invite_tx is None:
            self._respond(tx, req, 481)
            return
        call = invite_tx.data.get("call")
        # §9.2: the 200 to the CANCEL SHOULD carry the same To tag as the 487 to the INVITE.
        self._respond(tx, req, 200, to_tag=call.local_tag if isinstance(call, SipCall) else None)
        if invite_tx.final_code or not isinstance(call, SipCall):
            return  # already answered: CANCEL has no effect (RFC 3261 §9.2)
        invite_req = invite_tx.data.get("request")
        if isinstance(invite_req, SipRequest):
            self._respond(invite_tx, invite_req, 487, to_tag=call.local_tag)
        else:
            resp = build_response(req, 487, "Request Terminated", to_tag=call.local_tag,
                                  source=invite_tx.peer.addr)
            resp.set_header("CSeq", f"{cseq_of(req)[0]} INVITE")
            self.tx.respond(invite_tx, resp)
            SIP_RESPONSES.labels("INVITE", "487").inc()
        self._end(call, "cancel")

    # -- in-dialog -----------------------------------------------------------------------
    def _in_dialog(self, req: SipRequest, peer: Peer, tx: ServerTx, to_tag: str) -> None:
        method = req.method.upper()
        call = self._calls.get((req.call_id or "", to_tag))
        if call is None or call.state == "ended":
            self._respond(tx, req, 481)
            return
        seq = cseq_of(req)[0]
        if method != "CANCEL":
            if seq <= call.remote_cseq and method != "PRACK":
                self._respond(tx, req, 500, headers={"Retry-After": "1"})
                return
            call.remote_cseq = seq
        if method == "BYE":
            self._respond(tx, req, 200)
            self._end(call, "bye")
        elif method in ("INVITE", "UPDATE"):
            self._on_reinvite(call, req, tx)
        elif method == "INFO":
            self._on_info(call, req, tx)
        elif method in ("OPTIONS", "NOTIFY"):
            self._respond(tx, req, 200, headers={"Allow": ALLOW} if method == "OPTIONS" else None)
        elif method in KNOWN_METHODS:
            self._respond(tx, req, 405, headers={"Allow": ALLOW})
        else:
            self._respond(tx, req, 501, headers={"Allow": ALLOW})

    def _on_reinvite(self, call: SipCall, req: SipRequest, tx: ServerTx) -> None:
        if call.state != "confirmed" or call.sdp is None or call.media is None:
            self._respond(tx, req, 500, headers={"Retry-After": "1"})  # §14.2: still answering
            return
        body: bytes
        if req.body:
            try:
                prefs = [str(call.media.codec)] + [str(c) for c in self._s.codecs if c != call.media.codec]
                media = negotiate(parse_offer(req.body), prefs)
            except SdpError as exc:
                self._respond(tx, req, 488, headers={"Warning": f'304 voice-bridge "{str(exc)[:120]}"'})
                return
            call.media = media
            body = call.sdp.answer(media)
            self._app.media_changed(call)
        else:
            body = call.sdp.answer(call.media)  # an offer; the answer comes in the ACK
            call.late_offer_pending = req.method.upper() == "INVITE"
        headers = {"Contact": self.contact_for(call.peer), "Allow": ALLOW}
        self._respond(tx, req, 200, headers=headers, body=body)
        if req.method.upper() == "INVITE":
            self._await_ack(call, tx, initial=False)

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
            self._respond(tx, req, 415, headers={"Accept": "application/dtmf-relay, application/dtmf"})
            return
        if digit == "10":
            digit = "*"
        elif digit == "11":
            digit = "#"
        self._respond(tx, req, 200)
        if digit in _DTMF_DIGITS and len(digit) == 1:
            self._app.dtmf(call, digit, duration)

    # -- our requests ----------------------------------------------------------------------
    def _end(self, call: SipCall, reason: str) -> None:
        """Forget the call and tell the app once; the caller of _end handles the wire."""
        if call.state == "ended":
            return
        call.state = "ended"
        call.end_reason = reason
        call.awaiting_ack = False
        call.cancel_timers()
        self._calls.pop(call.key, None)
        self._uac_acks.pop(call.info.call_id, None)
        if call.prepared:
            self._app.ended(call, reason)
        log.info("call ended", extra={"call_id": call.info.call_id, "reason": reason,
                                      "from": mask_phone_numbers(call.info.from_uri)})

    async def hangup(self, call: SipCall, reason: str) -> None:
        if call.state == "ended":
            return
        if call.state == "early" and call.awaiting_ack:
            call.pending_hangup = reason  # §15: BYE only after the ACK (or its timeout)
            return
        if call.state == "early":
            self._end(call, reason)
            return
        await self._bye(call, reason)

    async def _bye(self, call: SipCall, reason: str) -> None:
        self._end(call, reason)
        with contextlib.suppress(TransactionTimeout, OSError, asyncio.CancelledError):
            resp = await self.request_in_dialog(call, "BYE")
            log.debug("BYE answered %s", resp.status_code, extra={"call_id": call.info.call_id})

    async def refer(self, call: SipCall, target: str) -> bool:
        if call.state != "confirmed":
            return False
        uri = target if target.startswith(("sip:", "sips:", "tel:")) else f"sip:{target}"
        try:
            resp = await self.request_in_dialog(call, "REFER", {"Refer-To": f"<{uri}>",
                                                                "Referred-By": self.contact_for(call.peer)})
        except (TransactionTimeout, OSError):
            return False
        log.info("REFER answered %s", resp.status_code, extra={"call_id": call.info.call_id})
        return 200 <= resp.status_code < 300

    async def request_in_dialog(self, call: SipCall, method: str,
                                headers: dict[str, str] | None = None) -> SipResponse:
        call.local_cseq += 1
        branch = new_branch()
        local_ip = self.local_ip_for(call.peer.addr[0])
        to = f"{call.remote_uri};tag={call.remote_tag}" if call.remote_tag else call.remote_uri
        req = new_request(method, call.remote_target, transport=call.peer.transport, host=local_ip,
                          port=self.bound_port, branch=branch, from_=f"{call.local_uri};tag={call.local_tag}",
                          to=to, call_id=call.info.call_id, cseq=call.local_cseq)
        for route in call.route_set:  # UAS: Record-Route order as received (§12.1.1)
            req.add_header("Route", route)
        req.set_header("Contact", self.contact_for(call.peer))
        req.set_header("User-Agent", self._s.user_agent)
        for name, value in (headers or {}).items():
            req.set_header(name, value)
        dest = await self._destination(call)
        return await self.tx.request(bytes(req), branch, method, call.peer, dest)

    async def _destination(self, call: SipCall) -> tuple[str, int]:
        if call.peer.transport == "tcp":
            return call.peer.addr
        target = call.remote_target
        if call.route_set:
            target = call.route_set[0].strip().lstrip("<").split(">", 1)[0]
        uri = parse_uri(target)
        return await resolve(uri.host, uri.port or 5060)


def _without_tag(value: str) -> str:
    head, sep, tail = value.partition(">")
    if sep:
        return head + ">" + ";".join(p for p in tail.split(";") if p and not p.strip().startswith("tag="))
    return ";".join(p for p in value.split(";") if not p.strip().startswith("tag="))

